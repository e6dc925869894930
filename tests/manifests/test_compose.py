"""docker-compose.yml mirrors the cluster, speaks the Settings' names and holds no secret.

No Docker engine runs on our machines, so the compose stack is never built or started here.
These tests read the file: its services against the rendered manifests, its LOANOPS_ keys
against loanops.settings.Settings, its secrets against .env.example. The last one runs
`docker compose config` (or Compose v1's `docker-compose config`) where a client has compose,
and is skipped with the reason where none has.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from loanops.settings import Settings
from tests.manifests.kube import OVERLAYS_DIR, ROOT, Render, containers, placeholder, workloads

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
# Deployment in the cluster → service in compose.
CLUSTER_TO_COMPOSE = {
    "loanops-api": "api",
    "loanops-worker": "worker",
    "mlflow": "mlflow",
    "redis": "redis",
    "postgres": "postgres",
    "prefect-worker": "prefect-worker",
}
# Services that run the same command in both; the Prefect worker differs on purpose (a process
# pool here, Kubernetes Jobs there).
SAME_COMMAND = ("api", "worker", "mlflow")
ONE_SHOT = {"volume-permissions"}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SENSITIVE = ("PASSWORD", "API_KEYS", "DATABASE_URL", "BACKEND_STORE_URI", "SECRET")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value
    return values


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`, for the values in this file."""

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        found = variables.get(name)
        if found:
            return found
        if operator in (":-", "-"):
            return argument or ""
        if operator in (":?", "?"):
            raise KeyError(f"{name}: {argument}")
        return ""

    return INTERPOLATION.sub(replace, value)


def settings_fields() -> set[str]:
    return set(Settings.environment_variables())


def test_every_cluster_workload_has_a_service(renders: dict[str, Render]) -> None:
    present = set(services())
    for overlay in renders.values():
        for workload, _ in workloads(overlay.objects):
            name = workload["metadata"]["name"]
            assert name in CLUSTER_TO_COMPOSE, f"{overlay.overlay}: {name} has no compose service"
            assert CLUSTER_TO_COMPOSE[name] in present
    # And the Prefect server, which the cluster reaches outside its namespace.
    assert "prefect-server" in present


def test_commands_match_the_cluster(renders: dict[str, Render]) -> None:
    render = renders["local"]
    for deployment, service in CLUSTER_TO_COMPOSE.items():
        if service not in SAME_COMMAND:
            continue
        (container,) = [
            c
            for c in containers(render.get("Deployment", deployment)["spec"]["template"]["spec"])
            if c["image"].startswith("loanops")
        ]
        assert services()[service]["command"] == container["args"], service


def test_loanops_services_build_the_one_image() -> None:
    for name, service in services().items():
        image = str(service.get("image", ""))
        if image.startswith("loanops"):
            assert image == "loanops:dev", name
            assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
    local = yaml.safe_load((OVERLAYS_DIR / "local" / "kustomization.yaml").read_text())
    tags = {entry["name"]: entry.get("newTag") for entry in local["images"]}
    assert services()["redis"]["image"] == f"redis:{tags['redis']}"


def test_loanops_keys_are_settings_fields() -> None:
    known = settings_fields()
    seen: set[str] = set()
    for name, service in services().items():
        keys = {key for key in environment(service) if key.startswith("LOANOPS")}
        assert keys <= known, f"{name}: {sorted(keys - known)} are not Settings fields"
        seen |= keys
    # What the cluster's ConfigMap and Secret set for where things are, compose sets too.
    assert {
        "LOANOPS_ENV",
        "LOANOPS_TRACKING_URI",
        "LOANOPS_REDIS_URL",
        "LOANOPS_STORAGE_DIR",
        "LOANOPS_API_KEYS",
        "LOANOPS_DATABASE_URL",
    } <= seen


@pytest.mark.parametrize("service", ["api", "worker", "prefect-worker"])
def test_settings_load_from_the_compose_environment(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    variables = env_example()
    env = {
        key: interpolate(value, variables)
        for key, value in environment(services()[service]).items()
        if key.startswith("LOANOPS_")
    }
    for key in [k for k in os.environ if k.startswith("LOANOPS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.env == "dev"
    assert settings.mlflow_uri == "http://mlflow:5000"
    assert settings.decision_db_url.startswith("postgresql://decisions:")
    # In production the same placeholders are refused, as in the cluster.
    monkeypatch.setenv("LOANOPS_ENV", "production")
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_secrets_come_only_from_the_env_file() -> None:
    text = COMPOSE.read_text()
    example = env_example()
    used = {match.group(1) for match in INTERPOLATION.finditer(text)}
    assert used == set(example), "every .env.example variable is used, and only those"
    for name, service in services().items():
        for key, value in environment(service).items():
            if any(word in key for word in SENSITIVE):
                assert "${" in value, f"{name}: {key} holds a literal secret"
            if "://" in value and "@" in value:  # a URL with credentials
                userinfo = value.split("://", 1)[1].rsplit("@", 1)[0]
                assert ":${" in userinfo, f"{name}: {key} has a literal password"
    for key, value in example.items():
        if key != "ENVIRONMENT":
            assert placeholder(value), f".env.example: {key} must be a placeholder"
    assert example["ENVIRONMENT"] == "dev"
    assert not any(key.startswith("LOANOPS_") for key in example), (
        "loanops reads .env too: compose's variables must not be LOANOPS_ settings"
    )
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_long_running_services_have_healthchecks_and_dependencies_wait_for_them() -> None:
    all_services = services()
    for name, service in all_services.items():
        if name in ONE_SHOT:
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, condition in (service.get("depends_on") or {}).items():
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert condition == {"condition": expected}, f"{name} → {dependency}"


def test_published_ports_are_on_loopback_only() -> None:
    for name, service in services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_the_postgres_init_script_creates_both_databases() -> None:
    (mount,) = [v for v in services()["postgres"]["volumes"] if "initdb" in v]
    script = ROOT / mount.split(":")[0]
    assert script.is_file() and os.access(script, os.X_OK)
    text = script.read_text()
    for name in ("mlflow", "decisions"):
        assert f"CREATE DATABASE {name} OWNER {name};" in text
    variables = set(environment(services()["postgres"]))
    assert {"MLFLOW_DB_PASSWORD", "DECISIONS_DB_PASSWORD"} <= variables


def _compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    client = _compose_client()
    if client is None:
        pytest.skip(
            "no compose client: `docker compose` is not a command of this docker CLI and "
            "`docker-compose` is not installed (Debian: apt-get install docker-compose)"
        )
    env = {k: v for k, v in os.environ.items() if k not in env_example()}
    command = [*client, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config", "-q"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    # Without the secrets, compose refuses to start rather than run on empty passwords.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    command = [*client, "--env-file", str(empty), "-f", str(COMPOSE), "config", "-q"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert result.returncode != 0
    assert "set" in result.stderr and ".env" in result.stderr, result.stderr
