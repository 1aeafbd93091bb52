"""Migration ordering: on the first install the Job is an ordinary resource created with the
bundled PostgreSQL (which a pre-install hook would not have); on every upgrade it is a
pre-upgrade hook, so the schema is migrated before new bot Pods exist."""

from __future__ import annotations

from .helpers import FULLNAME, Manifest, env_of, one, pod_spec


def _job(objects: list[Manifest]) -> Manifest:
    return one(objects, "Job")


def test_first_install_job_is_a_plain_resource(default_objects: list[Manifest]) -> None:
    job = _job(default_objects)
    assert job["metadata"]["name"] == f"{FULLNAME}-migrate-1"
    assert not any(key.startswith("helm.sh/hook") for key in job["metadata"]["annotations"])
    # A release object: Helm removes it at the first upgrade, no TTL races Helm for it.
    assert "ttlSecondsAfterFinished" not in job["spec"]
    # It is created with the PostgreSQL StatefulSet in the same install.
    assert one(default_objects, "StatefulSet", f"{FULLNAME}-postgresql")


def test_upgrade_job_is_a_pre_upgrade_hook(render) -> None:
    job = _job(render(is_upgrade=True, revision=7))
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-upgrade"
    assert "pre-install" not in annotations["helm.sh/hook"]
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    # One Job per revision: a Job's Pod template is immutable.
    assert job["metadata"]["name"] == f"{FULLNAME}-migrate-7"
    # Per-revision hook Jobs are not replaced by before-hook-creation: a TTL removes them.
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400


def test_job_runs_migrate_after_postgresql_answers(default_objects: list[Manifest]) -> None:
    spec = pod_spec(_job(default_objects))
    # First PostgreSQL answers, then its roles are made so (test_postgresql_roles.py), then
    # the migration runs as the bot's own role.
    wait, roles = spec["initContainers"]
    assert roles["name"] == "postgresql-roles"
    wait_env = env_of(wait)
    assert wait_env["DB_HOST"]["value"] == f"{FULLNAME}-postgresql"
    assert wait_env["DB_PORT"]["value"] == "5432"
    assert "create_connection" in wait["args"][0]
    (migrate,) = spec["containers"]
    assert migrate["args"] == ["migrate"]
    assert "command" not in migrate  # the image's entrypoint: python -m bot
    assert spec["restartPolicy"] == "Never"
    assert _job(default_objects)["spec"]["backoffLimit"] >= 3


def test_job_gets_the_database_but_not_the_bot_token(default_objects: list[Manifest]) -> None:
    (migrate,) = pod_spec(_job(default_objects))["containers"]
    env = env_of(migrate)
    assert "BOT_TOKEN" not in env
    assert "WEBHOOK_SECRET" not in env
    # The URL without its password; the password is a file in SECRETS_DIR.
    assert env["DATABASE_URL"]["value"] == (
        f"postgresql+asyncpg://hellobot@{FULLNAME}-postgresql:5432/hellobot"
    )
    mount = {m["name"]: m["mountPath"] for m in migrate["volumeMounts"]}["secrets"]
    assert env["SECRETS_DIR"]["value"] == mount
    volumes = {v["name"]: v for v in pod_spec(_job(default_objects))["volumes"]}
    assert volumes["secrets"]["secret"]["items"] == [
        {"key": "database-password", "path": "database_password"}
    ]
    # Not from the ConfigMap: a pre-upgrade hook runs before the ConfigMap is updated.
    assert "envFrom" not in migrate


def test_external_database_job_waits_for_that_host(render) -> None:
    objects = render(
        {"postgresql": {"enabled": False}, "externalDatabase": {"host": "db.internal"}}
    )
    # An external server's roles are its administrator's: no postgresql-roles step.
    (wait,) = pod_spec(_job(objects))["initContainers"]
    assert env_of(wait)["DB_HOST"]["value"] == "db.internal"


def test_bot_readiness_gates_traffic_until_migrated(default_objects: list[Manifest]) -> None:
    """On first install the bot starts beside the Job; /readyz keeps it out of the Service until
    the schema is at head, and the rollout never removes a ready Pod first."""
    deployment = one(default_objects, "Deployment")
    (bot,) = pod_spec(deployment)["containers"]
    assert bot["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_helm_test_checks_readyz_through_the_service(default_objects: list[Manifest]) -> None:
    pod = one(default_objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["args"][1] == f"http://{FULLNAME}:8080/readyz"
    assert "urlopen" in container["args"][0]
    service = one(default_objects, "Service", FULLNAME)
    assert service["spec"]["ports"][0]["port"] == 8080
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "test"


def test_long_release_names_keep_the_revision_in_the_job_name(render) -> None:
    objects = render({"fullnameOverride": "a" * 63}, is_upgrade=True, revision=123)
    name = _job(objects)["metadata"]["name"]
    assert name.endswith("-migrate-123")
    assert len(name) <= 63
