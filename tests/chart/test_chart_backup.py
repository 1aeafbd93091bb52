"""backup.*: a pg_dump CronJob within the Job budget, restricted like every Pod, allowed to
reach PostgreSQL and nothing else, writing to a PVC that outlives the release."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from .helpers import (
    FULLNAME,
    REQUIRED,
    Manifest,
    deep_merge,
    env_of,
    find,
    mebibytes,
    one,
    pod_spec,
)

JOB_LIMIT_MIB = 256
BACKUP = {"app.kubernetes.io/component": "backup"}


@pytest.fixture(scope="module")
def backup_objects(rendered_variants: dict[str, list[Manifest]]) -> list[Manifest]:
    return rendered_variants["backup"]


def _cron_job(objects: list[Manifest]) -> Manifest:
    return one(objects, "CronJob", f"{FULLNAME}-backup")


def test_off_by_default(default_objects: list[Manifest]) -> None:
    assert find(default_objects, "CronJob") == []
    assert find(default_objects, "PersistentVolumeClaim") == []


def test_cron_job_dumps_the_release_database_on_a_schedule(backup_objects: list[Manifest]) -> None:
    cron = _cron_job(backup_objects)
    assert cron["spec"]["schedule"] == "17 3 * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = pod_spec(cron)["containers"]
    assert container["image"] == "docker.io/library/postgres:17.6-bookworm"
    assert container["command"] == ["/bin/sh", "-c"]
    assert "pg_dump --format=custom" in container["args"][0]
    env = env_of(container)
    assert {
        name: env[name].get("value") for name in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE")
    } == {
        "PGHOST": f"{FULLNAME}-postgresql",
        "PGPORT": "5432",
        "PGUSER": "hellobot",
        "PGDATABASE": "hellobot",
    }
    # The password is a file (files/backup.sh makes it libpq's passfile), not PGPASSWORD.
    assert "PGPASSWORD" not in env
    spec = pod_spec(cron)
    (secrets,) = [v for v in spec["volumes"] if v["name"] == "secrets"]
    assert secrets["secret"]["secretName"] == FULLNAME
    assert secrets["secret"]["items"] == [{"key": "database-password", "path": "database_password"}]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "secrets"]
    assert env["PGPASSWORD_FILE"]["value"] == mount["mountPath"] + "/database_password"
    assert env["BACKUP_KEEP"]["value"] == "7"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["backups"] == env["BACKUP_DIR"]["value"] == "/backups"


def test_external_database_is_dumped_too(render) -> None:
    objects = render(
        {
            "backup": {"enabled": True},
            "postgresql": {"enabled": False},
            "externalDatabase": {"host": "db.example.internal", "port": 6432, "database": "bots"},
        }
    )
    env = env_of(pod_spec(_cron_job(objects))["containers"][0])
    assert (env["PGHOST"]["value"], env["PGPORT"]["value"], env["PGDATABASE"]["value"]) == (
        "db.example.internal",
        "6432",
        "bots",
    )
    egress = one(objects, "NetworkPolicy", f"{FULLNAME}-backup")["spec"]["egress"]
    assert {"port": 6432, "protocol": "TCP"} in egress[-1]["ports"]


def test_the_job_fits_the_budget_and_pod_security(backup_objects: list[Manifest]) -> None:
    spec = pod_spec(_cron_job(backup_objects))
    (container,) = spec["containers"]
    assert mebibytes(container["resources"]["limits"]["memory"]) <= JOB_LIMIT_MIB
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsUser"] == 999  # the postgres image's user
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_an_oversized_backup_job_is_refused(chart: helm.Chart) -> None:
    """The budget is in the schema: a Job limit is at most 256Mi by values too."""
    values = {
        "backup": {
            "resources": {
                "requests": {"cpu": "25m", "memory": "64Mi"},
                "limits": {"cpu": "500m", "memory": "512Mi"},
            }
        }
    }
    with pytest.raises(helm.HelmValuesError, match="/backup/resources"):
        chart.validate_schema(deep_merge(REQUIRED, values))


def test_the_volume_is_kept_on_uninstall_or_brought(backup_objects: list[Manifest], render) -> None:
    claim = one(backup_objects, "PersistentVolumeClaim", f"{FULLNAME}-backups")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    volumes = {v["name"]: v for v in pod_spec(_cron_job(backup_objects))["volumes"]}
    assert volumes["backups"]["persistentVolumeClaim"]["claimName"] == f"{FULLNAME}-backups"
    own = render({"backup": {"enabled": True, "persistence": {"existingClaim": "nas-backups"}}})
    assert find(own, "PersistentVolumeClaim") == []
    volumes = {v["name"]: v for v in pod_spec(_cron_job(own))["volumes"]}
    assert volumes["backups"]["persistentVolumeClaim"]["claimName"] == "nas-backups"


def _admits(policy: dict[str, Any], component: str) -> bool:
    return any(
        peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        == component
        for rule in policy["spec"].get("ingress", [])
        for peer in rule["from"]
    )


def test_network_policies_let_the_job_reach_postgresql_only(
    backup_objects: list[Manifest], default_objects: list[Manifest]
) -> None:
    own = one(backup_objects, "NetworkPolicy", f"{FULLNAME}-backup")
    assert own["spec"]["podSelector"]["matchLabels"].items() >= BACKUP.items()
    assert "ingress" not in own["spec"]
    dns, database = own["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert database["ports"] == [{"port": 5432, "protocol": "TCP"}]
    postgresql = one(backup_objects, "NetworkPolicy", f"{FULLNAME}-postgresql")
    assert _admits(postgresql, "backup")
    assert not _admits(one(default_objects, "NetworkPolicy", f"{FULLNAME}-postgresql"), "backup")
    labels = _cron_job(backup_objects)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]
    assert labels["labels"].items() >= BACKUP.items()


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"schedule": "daily"}, "/backup/schedule"),
        ({"keep": 0}, "/backup/keep"),
        ({"persistence": {"size": "2GB"}}, "/backup/persistence/size"),
        ({"persistence": {"existingClaim": "Bad_Claim"}}, "/backup/persistence/existingClaim"),
    ],
)
def test_schema_rejects_bad_backup_values(
    chart: helm.Chart, values: dict[str, Any], where: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(deep_merge(REQUIRED, {"backup": values}))
    assert where in str(caught.value)
