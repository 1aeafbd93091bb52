{{/*
Names. fullname is <release>-<chart> unless the release name already contains the chart name;
both are cut to 63 characters (the DNS label limit).
*/}}
{{- define "hello-bot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hello-bot.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hello-bot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Standard labels for every object. */}}
{{- define "hello-bot.labels" -}}
helm.sh/chart: {{ include "hello-bot.chart" . }}
{{ include "hello-bot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "hello-bot.name" . }}
{{- end -}}

{{/* Immutable labels: the only ones in selectors (version would break upgrades). */}}
{{- define "hello-bot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hello-bot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
One release runs several workloads (bot, PostgreSQL, Redis, migration); the component label,
fixed per workload and therefore immutable too, keeps their selectors apart.
Usage: include "hello-bot.componentSelectorLabels" (dict "ctx" $ "component" "bot")
*/}}
{{- define "hello-bot.componentSelectorLabels" -}}
{{ include "hello-bot.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hello-bot.componentLabels" -}}
{{ include "hello-bot.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hello-bot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hello-bot.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "hello-bot.secretName" -}}
{{- default (include "hello-bot.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{- define "hello-bot.configMapName" -}}
{{- include "hello-bot.fullname" . -}}
{{- end -}}

{{- define "hello-bot.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "hello-bot.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hello-bot.redis.fullname" -}}
{{- printf "%s-redis" (include "hello-bot.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* One Job per revision; the fullname is cut first so the revision is never cut off. */}}
{{- define "hello-bot.migrationJobName" -}}
{{- printf "%s-migrate-%d" (include "hello-bot.fullname" . | trunc 45 | trimSuffix "-") (int .Release.Revision) -}}
{{- end -}}

{{/* repository:tag, plus @digest when image.digest is set (the digest wins over the tag). */}}
{{- define "hello-bot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- with .Values.image.digest }}@{{ . }}{{ end -}}
{{- end -}}

{{/* The operator's objects: ServiceAccount, ClusterRole/Binding, Deployment, NetworkPolicy. */}}
{{- define "hello-bot.operator.fullname" -}}
{{- printf "%s-operator" (include "hello-bot.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The operator image: repository:tag, plus @digest when operator.image.digest is set. */}}
{{- define "hello-bot.operator.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository .Values.operator.image.tag -}}
{{- with .Values.operator.image.digest }}@{{ . }}{{ end -}}
{{- end -}}

{{/*
Where the operator provisions per-bot databases (`database.mode: Shared`): "secret" (an admin URL
in operator.sharedPostgres.existingSecret), "bundled" (the release's PostgreSQL, whose user the
official image makes a superuser), or "" (operator off, or none: only `database.mode: External`).
*/}}
{{- define "hello-bot.operator.sharedPostgres" -}}
{{- if and .Values.operator.enabled .Values.operator.sharedPostgres.enabled -}}
{{- if .Values.operator.sharedPostgres.existingSecret -}}secret
{{- else if .Values.postgresql.enabled -}}bundled
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The bundled PostgreSQL's Service as Pods in any namespace reach it. */}}
{{- define "hello-bot.postgresql.clusterHost" -}}
{{- printf "%s.%s.svc" (include "hello-bot.postgresql.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* The CLI subcommand of the bot container: serve (webhook), poll (long polling) or host. */}}
{{- define "hello-bot.botCommand" -}}
{{- if eq .Values.bot.mode "polling" -}}poll{{- else if eq .Values.bot.mode "host" -}}host{{- else -}}serve{{- end -}}
{{- end -}}

{{/* Where the bot host reads its bot files (BOTS_DIR): the Secret's keys, one file each. */}}
{{- define "hello-bot.botsDir" -}}/etc/hello-bot/bots{{- end -}}

{{/* Database coordinates: the bundled StatefulSet or externalDatabase. */}}
{{- define "hello-bot.database.host" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "hello-bot.postgresql.fullname" . -}}
{{- else -}}
{{- .Values.externalDatabase.host -}}
{{- end -}}
{{- end -}}

{{- define "hello-bot.database.port" -}}
{{- if .Values.postgresql.enabled -}}5432{{- else -}}{{ .Values.externalDatabase.port }}{{- end -}}
{{- end -}}

{{- define "hello-bot.database.user" -}}
{{- if .Values.postgresql.enabled -}}{{ .Values.postgresql.auth.username }}{{- else -}}{{ .Values.externalDatabase.username }}{{- end -}}
{{- end -}}

{{- define "hello-bot.database.name" -}}
{{- if .Values.postgresql.enabled -}}{{ .Values.postgresql.auth.database }}{{- else -}}{{ .Values.externalDatabase.database }}{{- end -}}
{{- end -}}

{{/*
Database env: DATABASE_URL without its password; the password is the file database_password in
SECRETS_DIR (hello-bot.secretsVolume), which the bot puts into the URL (DATABASE_PASSWORD), so
no password is in a ConfigMap, the Pod spec or any process environment.
*/}}
{{- define "hello-bot.databaseEnv" -}}
- name: DATABASE_URL
  value: {{ printf "postgresql+asyncpg://%s@%s:%s/%s" (include "hello-bot.database.user" .) (include "hello-bot.database.host" .) (include "hello-bot.database.port" .) (include "hello-bot.database.name" .) | quote }}
- name: SECRETS_DIR
  value: {{ include "hello-bot.secretsDir" . | quote }}
{{- end -}}

{{/* Where the bot's containers find their secrets as files (SECRETS_DIR). */}}
{{- define "hello-bot.secretsDir" -}}/etc/hello-bot/secrets{{- end -}}

{{/*
The release Secret's keys as the files SECRETS_DIR holds, named after the settings they are.
Usage: include "hello-bot.secretsVolume" (dict "ctx" $ "token" true "redis" true)
  token: bot_token and webhook_secret (serve and poll; the bot host reads BOTS_DIR instead)
  redis: redis_url, when an external Redis's URL (it may carry a password) is in the Secret
*/}}
{{- define "hello-bot.secretsVolume" -}}
- name: secrets
  secret:
    secretName: {{ include "hello-bot.secretName" .ctx }}
    defaultMode: 0440
    items:
      {{- if .token }}
      - key: bot-token
        path: bot_token
      - key: webhook-secret
        path: webhook_secret
      {{- end }}
      - key: database-password
        path: database_password
      {{- if and .redis (not .ctx.Values.redis.enabled) .ctx.Values.externalRedis.url }}
      - key: redis-url
        path: redis_url
      {{- end }}
{{- end -}}

{{- define "hello-bot.secretsMount" -}}
- name: secrets
  mountPath: {{ include "hello-bot.secretsDir" . | quote }}
  readOnly: true
{{- end -}}

{{/*
The bundled PostgreSQL's superuser, for administration only (files/postgresql-roles.sh): the
bot logs in as postgresql.auth.username, which is no superuser. Its password is in a Secret of
its own, made before anything else on install and upgrade (a hook), so the migration Job of the
first upgrade that has it finds it.
*/}}
{{- define "hello-bot.postgresql.adminUser" -}}postgres{{- end -}}

{{- define "hello-bot.postgresql.adminSecretName" -}}
{{- printf "%s-postgresql-admin" (include "hello-bot.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The bot's Pod shape, shared with the operator: files/bot-pod.yaml as a dict.
Usage: $pod := include "hello-bot.botPod" . | fromYaml
*/}}
{{- define "hello-bot.botPod" -}}
{{- $pod := .Files.Get "files/bot-pod.yaml" | fromYaml -}}
{{- if not (and $pod.pod $pod.container $pod.strategy) -}}
{{- fail "hello-bot: files/bot-pod.yaml is missing or incomplete (is it in .helmignore?)" -}}
{{- end -}}
{{- toYaml $pod -}}
{{- end -}}

{{/* Restricted Pod Security Standard: pod level. */}}
{{- define "hello-bot.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Restricted Pod Security Standard: container level. */}}
{{- define "hello-bot.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The public base URL Telegram posts to: explicit, or derived from the Ingress host. */}}
{{- define "hello-bot.webhookUrl" -}}
{{- if .Values.bot.webhookUrl -}}
{{- .Values.bot.webhookUrl | trimSuffix "/" -}}
{{- else if and .Values.ingress.enabled .Values.ingress.host -}}
{{- printf "https://%s" .Values.ingress.host -}}
{{- end -}}
{{- end -}}

{{/*
A generated secret value that never rotates silently: an explicit value wins (a deliberate
change), else the value already stored in the release's Secret (found with lookup), else a new
random one (first install only).
Usage: include "hello-bot.stableSecretValue" (dict "existing" $data "key" "k" "value" "" "length" 32)
*/}}
{{- define "hello-bot.stableSecretValue" -}}
{{- if .value -}}
{{- .value | b64enc -}}
{{- else if hasKey .existing .key -}}
{{- index .existing .key -}}
{{- else -}}
{{- randAlphaNum (int .length) | b64enc -}}
{{- end -}}
{{- end -}}

{{/* Collects every configuration mistake and fails with all of them at once. */}}
{{- define "hello-bot.validateValues" -}}
{{- $messages := list -}}
{{- if and (ne .Values.bot.mode "host") (not .Values.secret.existingSecret) (not .Values.secret.botToken) -}}
{{- $messages = append $messages "secret.botToken: set the Telegram bot token (--set secret.botToken=...) or name a Secret you manage in secret.existingSecret" -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (eq .Values.postgresql.auth.username (include "hello-bot.postgresql.adminUser" .)) -}}
{{- $messages = append $messages (printf "postgresql.auth.username: %s is the bundled PostgreSQL's superuser; the bot logs in as a role of its own, so choose another name" .Values.postgresql.auth.username) -}}
{{- end -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.externalDatabase.host) -}}
{{- $messages = append $messages "externalDatabase.host: postgresql.enabled is false, so set the host of your PostgreSQL server" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (eq .Values.bot.mode "polling") -}}
{{- $messages = append $messages "ingress.enabled: bot.mode is polling, so Telegram never calls the webhook; turn the Ingress off or use bot.mode=webhook" -}}
{{- end -}}
{{- if and (eq .Values.bot.mode "polling") (gt (int .Values.bot.replicaCount) 1) -}}
{{- $messages = append $messages (printf "bot.replicaCount: %d polling Pods would fight over getUpdates (Telegram answers 409 Conflict); polling needs bot.replicaCount=1" (int .Values.bot.replicaCount)) -}}
{{- end -}}
{{- if and (eq .Values.bot.mode "host") (not .Values.bot.bots.existingSecret) -}}
{{- $messages = append $messages "bot.bots.existingSecret: bot.mode is host, so name the Secret that holds one <name>.env key per bot (BOT_TOKEN=... and WEBHOOK_SECRET=... lines)" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) -}}
{{- $messages = append $messages "ingress.host: ingress.enabled is true, so set the public host name Telegram will call" -}}
{{- end -}}
{{- $drain := add .Values.bot.preStopSeconds .Values.bot.shutdownGraceSeconds -}}
{{- if le (int .Values.bot.terminationGracePeriodSeconds) (int $drain) -}}
{{- $messages = append $messages (printf "bot.terminationGracePeriodSeconds: %d must exceed bot.preStopSeconds + bot.shutdownGraceSeconds (%d), or Pods are killed mid-drain" (int .Values.bot.terminationGracePeriodSeconds) (int $drain)) -}}
{{- end -}}
{{- $messages = concat $messages (include "hello-bot.validateMetrics" . | fromYamlArray) -}}
{{- $messages = concat $messages (include "hello-bot.validatePdb" . | fromYamlArray) -}}
{{- if $messages -}}
{{- fail (printf "\n\nhello-bot: invalid values:\n  - %s" (join "\n  - " $messages)) -}}
{{- end -}}
{{- end -}}

{{/* NetworkPolicy egress rule: cluster DNS. */}}
{{- define "hello-bot.networkPolicy.dnsEgress" -}}
- to:
    - namespaceSelector:
        {{- toYaml .Values.networkPolicy.dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 8 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}

{{/* NetworkPolicy egress rule: PostgreSQL, bundled (by label) or external (by CIDR). */}}
{{- define "hello-bot.networkPolicy.databaseEgress" -}}
{{- if .Values.postgresql.enabled -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "hello-bot.componentSelectorLabels" (dict "ctx" . "component" "postgresql") | nindent 10 }}
  ports:
    - port: 5432
      protocol: TCP
{{- else -}}
- to:
    {{- range .Values.networkPolicy.externalCidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - port: {{ .Values.externalDatabase.port }}
      protocol: TCP
{{- end -}}
{{- end -}}

{{/* Port of externalRedis.url (6379 when the URL names none). */}}
{{- define "hello-bot.externalRedis.port" -}}
{{- $hostPort := (urlParse .Values.externalRedis.url).host | splitList "@" | last -}}
{{- $parts := splitList ":" $hostPort -}}
{{- if gt (len $parts) 1 -}}{{ last $parts }}{{- else -}}6379{{- end -}}
{{- end -}}

{{/* Mistakes in metrics.*, as a YAML list of messages (validateValues reports them). */}}
{{- define "hello-bot.validateMetrics" -}}
{{- $messages := list -}}
{{- $metrics := .Values.metrics -}}
{{- if and $metrics.serviceMonitor.enabled $metrics.podMonitor.enabled -}}
{{- $messages = append $messages "metrics.podMonitor.enabled: metrics.serviceMonitor.enabled is true too; both would scrape every bot Pod twice and double every sum in the alerts, so enable one" -}}
{{- end -}}
{{- if and $metrics.prometheusRule.enabled (not (or $metrics.serviceMonitor.enabled $metrics.podMonitor.enabled)) -}}
{{- $messages = append $messages "metrics.prometheusRule.enabled: the alerts select the job label that the chart's ServiceMonitor or PodMonitor sets; enable metrics.serviceMonitor or metrics.podMonitor too" -}}
{{- end -}}
{{- toYaml $messages -}}
{{- end -}}

{{/*
Mistakes in pdb.*, as a YAML list of messages: a budget that allows no eviction blocks
`kubectl drain` forever. Kubernetes rounds percentages up for both fields.
*/}}
{{- define "hello-bot.validatePdb" -}}
{{- $messages := list -}}
{{- $replicas := int .Values.bot.replicaCount -}}
{{- $min := toString .Values.pdb.minAvailable -}}
{{- $max := toString .Values.pdb.maxUnavailable -}}
{{- if and .Values.pdb.create (gt $replicas 1) -}}
{{- if and (ne $min "") (ne $max "") -}}
{{- $messages = append $messages "pdb.minAvailable: set pdb.minAvailable or pdb.maxUnavailable, not both (a PodDisruptionBudget takes one)" -}}
{{- else if ne $min "" -}}
{{- $blocks := false -}}
{{- if hasSuffix "%" $min -}}
{{- $percent := int (trimSuffix "%" $min) -}}
{{- $blocks = gt (mul $percent $replicas) (mul 100 (sub $replicas 1)) -}}
{{- else -}}
{{- $blocks = ge (int $min) $replicas -}}
{{- end -}}
{{- if $blocks -}}
{{- $messages = append $messages (printf "pdb.minAvailable: %s of %d bot Pods leaves none evictable, so draining a node would never finish; lower it or use pdb.maxUnavailable" $min $replicas) -}}
{{- end -}}
{{- else if and (ne $max "") (or (eq $max "0") (eq $max "0%")) -}}
{{- $messages = append $messages "pdb.maxUnavailable: 0 allows no eviction, so draining a node would never finish; use at least 1" -}}
{{- end -}}
{{- end -}}
{{- toYaml $messages -}}
{{- end -}}

{{/* A PodDisruptionBudget field: a percentage stays a string, a number becomes an integer. */}}
{{- define "hello-bot.pdb.intOrPercent" -}}
{{- if kindIs "string" . -}}{{ . | quote }}{{- else -}}{{ int . }}{{- end -}}
{{- end -}}

{{/*
The scrape endpoint of the ServiceMonitor and the PodMonitor. Prometheus names the job after the
Service or the monitor; it is set to the fullname instead, so the alerts select this release's
series whichever monitor scraped them.
Usage: include "hello-bot.metrics.endpoint" (dict "ctx" $ "monitor" .Values.metrics.serviceMonitor)
*/}}
{{- define "hello-bot.metrics.endpoint" -}}
- port: http
  path: /metrics
  {{- with .monitor.interval }}
  interval: {{ . }}
  {{- end }}
  {{- with .monitor.scrapeTimeout }}
  scrapeTimeout: {{ . }}
  {{- end }}
  relabelings:
    - action: replace
      targetLabel: job
      replacement: {{ include "hello-bot.fullname" .ctx }}
{{- end -}}

{{/* The label matchers every alert puts on the bot's series: this release's job and namespace. */}}
{{- define "hello-bot.metrics.selector" -}}
{{- printf "job=%q, namespace=%q" (include "hello-bot.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* The backups' PVC: backup.persistence.existingClaim, or the chart's own. */}}
{{- define "hello-bot.backup.claimName" -}}
{{- default (printf "%s-backups" (include "hello-bot.fullname" .)) .Values.backup.persistence.existingClaim -}}
{{- end -}}
