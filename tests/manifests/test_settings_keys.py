"""The ConfigMap and Secret keys are the Settings fields, and each overlay's values are valid.

`loanops-config` and `loanops-secrets` hold the settings of the loanops pods (the API, the
batch workers and the flow runs, which all read them through envFrom). Their keys are exactly
`LOANOPS_<FIELD>` for the pod fields of loanops.settings.Settings: every field but those in
`NOT_POD_FIELDS`. Secrets (SecretStr fields) go in the Secret, everything else in the ConfigMap.
The other ConfigMaps and Secrets belong to MLflow, Prefect, PostgreSQL and nginx, and hold
their own variables, never a LOANOPS_ one.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from loanops.settings import Settings
from tests.manifests.kube import Render, containers, placeholder, workloads

CONFIG, SECRETS = "loanops-config", "loanops-secrets"
NOT_POD_FIELDS = {
    # The deploy flow pins it on each Deployment's pod template, one version per ReplicaSet.
    "model_ref": "set per Deployment by the deploy flow",
    # Unset means "every row" and "no time budget"; an environment variable cannot say unset.
    "dataset_rows": "unset by default",
    "tune_timeout_seconds": "unset by default",
    # Unset in the cluster: the flow runs reach the API with their own service account.
    "kube_config": "unset in the cluster",
}
# Where this deployment puts things, and that it deploys to its own cluster: these differ from the
# code's embedded defaults on purpose.
DEPLOYMENT_FIELDS = {
    "env",
    "home",
    "tracking_uri",
    "redis_url",
    "storage_dir",
    "database_url",
    "deploy_target",
}


def env_name(field: str) -> str:
    return f"LOANOPS_{field.upper()}"


def secret_fields() -> set[str]:
    return {
        name
        for name, info in Settings.model_fields.items()
        if SecretStr in getattr(info.annotation, "__args__", (info.annotation,))
    }


def data(obj: dict[str, Any]) -> dict[str, str]:
    # kustomize keeps a Secret's stringData as written; data would be base64.
    assert "data" not in obj or obj["kind"] == "ConfigMap", "secrets are stringData templates"
    return dict(obj.get("data") or obj.get("stringData") or {})


def pod_environment(rendered: Render) -> dict[str, str]:
    return {
        **data(rendered.get("ConfigMap", CONFIG)),
        **data(rendered.get("Secret", SECRETS)),
    }


def test_the_excluded_fields_exist() -> None:
    assert set(NOT_POD_FIELDS) <= set(Settings.model_fields)
    assert secret_fields() == {"api_keys", "database_url"}


def test_configmap_and_secret_hold_exactly_the_pod_fields(rendered: Render) -> None:
    config = set(data(rendered.get("ConfigMap", CONFIG)))
    secrets = set(data(rendered.get("Secret", SECRETS)))
    pod_fields = set(Settings.model_fields) - set(NOT_POD_FIELDS)
    assert config | secrets == {env_name(f) for f in pod_fields}
    assert secrets == {env_name(f) for f in secret_fields()}
    assert not config & secrets


def test_every_loanops_variable_anywhere_is_a_settings_field(rendered: Render) -> None:
    known = {env_name(field) for field in Settings.model_fields}
    for obj in rendered.of_kind("ConfigMap", "Secret"):
        unknown = {k for k in data(obj) if k.startswith("LOANOPS_")} - known
        assert not unknown, f"{obj['kind']} {obj['metadata']['name']}: {unknown}"
        if obj["metadata"]["name"] not in (CONFIG, SECRETS):
            assert not {k for k in data(obj) if k.startswith("LOANOPS_")}
    for _, template in workloads(rendered.objects):
        for container in containers(template["spec"]):
            names = {v["name"] for v in container.get("env", [])}
            assert {n for n in names if n.startswith("LOANOPS_")} <= known


def test_secret_values_are_placeholders(rendered: Render) -> None:
    # No secret in git: every password or key in any Secret is one the settings refuse.
    for secret in rendered.of_kind("Secret"):
        for key, value in data(secret).items():
            sensitive = any(w in key.upper() for w in ("PASSWORD", "KEY", "AUTH", "SECRET"))
            if sensitive:
                assert placeholder(value), f"Secret {secret['metadata']['name']}: {key}"
            if "://" in value and "@" in value:  # a URL with credentials
                assert placeholder(value), f"Secret {secret['metadata']['name']}: {key}"


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_base_values_mirror_the_code_defaults(
    renders: dict[str, Render], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The production overlay changes only where things are; every other value is the code's.
    environment = {**pod_environment(renders["production"]), env_name("env"): "dev"}
    configured = settings_from(environment, monkeypatch)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    differing = {
        field
        for field in Settings.model_fields
        if getattr(configured, field) != getattr(defaults, field)
    }
    assert differing - DEPLOYMENT_FIELDS == set()


def test_local_settings_load_as_rendered(
    renders: dict[str, Render], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(pod_environment(renders["local"]), monkeypatch)
    assert settings.env == "dev"
    assert settings.mlflow_uri == "http://mlflow:5000"
    assert str(settings.storage_path) == "/var/lib/loanops/storage"
    assert settings.decision_db_url.startswith("sqlite:////var/lib/loanops/storage/")


def test_production_refuses_the_placeholders_and_takes_real_values(
    renders: dict[str, Render], monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = pod_environment(renders["production"])
    assert environment[env_name("env")] == "production"
    with pytest.raises(ValidationError, match="placeholder"):
        settings_from(environment, monkeypatch)
    real = {
        **environment,
        env_name("api_keys"): "k3y-one,k3y-two",
        env_name("database_url"): "postgresql://decisions:s3cret@postgres:5432/decisions",
    }
    settings = settings_from(real, monkeypatch)
    assert settings.decision_db_url.startswith("postgresql://")
    assert settings.api_key_values == ("k3y-one", "k3y-two")


def test_mlflow_keys_are_mlflow_server_variables(rendered: Render) -> None:
    import mlflow.environment_variables
    from mlflow.cli import server

    options = {param.envvar for param in server.params if param.envvar}
    known = options | {name for name in dir(mlflow.environment_variables) if name.isupper()}
    for name in ("mlflow-config", "mlflow-store", "mlflow-artifact-store"):
        if name not in rendered.names("ConfigMap") | rendered.names("Secret"):
            continue
        kind = "ConfigMap" if name in rendered.names("ConfigMap") else "Secret"
        for key in data(rendered.get(kind, name)):
            # AWS_* are boto3's, which MLflow uses for S3.
            assert key in known or key.startswith("AWS_"), f"{name}: {key}"
    # The store and the allowed hosts are `mlflow server` options, read from these variables.
    assert {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_SERVER_ALLOWED_HOSTS"} <= options
    assert "MLFLOW_ARTIFACTS_DESTINATION" in options


def test_prefect_keys_are_prefect_settings(rendered: Render) -> None:
    import prefect.settings

    for key in data(rendered.get("ConfigMap", "prefect-config")):
        # The observer's settings belong to prefect-kubernetes, the worker's own package.
        if key.startswith("PREFECT_INTEGRATIONS_KUBERNETES_"):
            continue
        assert hasattr(prefect.settings, key), key
