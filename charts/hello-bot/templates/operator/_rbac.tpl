{{- /*
The operator's RBAC rules, split by scope. The rules have one source, k8s/operator/clusterrole.yaml
(the kustomize base, where each rule's reason is written); files/operator-clusterrole.yaml is a
symlink to it, so both installs grant exactly the same.

With operator.watchNamespaces empty, all of them go into the ClusterRole (kopf --all-namespaces).
Otherwise each listed namespace gets the rules on namespaced resources in a Role, and the
ClusterRole keeps only what exists cluster-wide: CRDs, plus the namespace list kopf reads to
learn that a namespace it serves exists (kopf --namespace).
*/}}
{{- define "hello-bot.operator.rules" -}}
{{- $role := .Files.Get "files/operator-clusterrole.yaml" | fromYaml }}
{{- if not $role.rules }}
{{- fail "hello-bot: files/operator-clusterrole.yaml (a symlink to k8s/operator/clusterrole.yaml) is missing or has no rules" }}
{{- end }}
{{- $clusterScoped := list "customresourcedefinitions" }}
{{- $cluster := list }}
{{- $namespaced := list }}
{{- range $role.rules }}
{{- $isCluster := false }}
{{- range .resources }}
{{- if has . $clusterScoped }}
{{- $isCluster = true }}
{{- end }}
{{- end }}
{{- if $isCluster }}
{{- $cluster = append $cluster . }}
{{- else }}
{{- $namespaced = append $namespaced . }}
{{- end }}
{{- end }}
{{- if .Values.operator.watchNamespaces }}
{{- $cluster = append $cluster (dict "apiGroups" (list "") "resources" (list "namespaces") "verbs" (list "list" "watch")) }}
{{- else }}
{{- $cluster = $role.rules }}
{{- end }}
{{- toYaml (dict "cluster" $cluster "namespaced" $namespaced) }}
{{- end }}
