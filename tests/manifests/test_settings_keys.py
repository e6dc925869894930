"""The ConfigMap and Secret keys are the settings' variables, and each overlay's values are valid.

`loanops-config` and `loanops-secrets` hold the settings of the loanops pods (the API, the
batch workers and the flow runs, which all read them through envFrom). Their keys are exactly
the `LOANOPS_*` variables of loanops.settings.Settings, each group's included (the settings are
nested, `settings.gate.min_auc`, but their variables stay flat, `LOANOPS_PROMOTION_MIN_AUC`):
every variable but those in `NOT_POD_VARIABLES`. Secrets (SecretStr fields) go in the Secret,
everything else in the ConfigMap. The other ConfigMaps and Secrets belong to MLflow, Prefect,
PostgreSQL and nginx, and hold their own variables, never a LOANOPS_ one.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from loanops.settings import Settings
from tests.manifests.kube import Render, containers, placeholder, workloads

CONFIG, SECRETS = "loanops-config", "loanops-secrets"
VARIABLES = Settings.environment_variables()
NOT_POD_VARIABLES = {
    # The deploy flow pins it on each Deployment's pod template, one version per ReplicaSet.
    "LOANOPS_MODEL_REF": "set per Deployment by the deploy flow",
    # Unset means "every row" and "no time budget"; an environment variable cannot say unset.
    "LOANOPS_DATASET_ROWS": "unset by default",
    "LOANOPS_TUNE_TIMEOUT_SECONDS": "unset by default",
    # Only a declared dataset whose source is a query reads it; a deployment adds it with one.
    "LOANOPS_SOURCE_DATABASE_URL": "unset unless a declared dataset queries a database",
    # Unset in the cluster: the flow runs reach the API with their own service account.
    "LOANOPS_KUBE_CONFIG": "unset in the cluster",
    # The CLI's way to the API (`loanops batch`), not a setting of any pod.
    "LOANOPS_API_URL": "the CLI's, not a pod's",
    "LOANOPS_API_KEY": "the CLI's, not a pod's",
}
# Where this deployment puts things, and that it deploys to its own cluster: these differ from the
# code's embedded defaults on purpose.
DEPLOYMENT_VARIABLES = {
    "LOANOPS_ENV",
    "LOANOPS_HOME",
    "LOANOPS_TRACKING_URI",
    "LOANOPS_REDIS_URL",
    "LOANOPS_STORAGE_DIR",
    "LOANOPS_DATABASE_URL",
    "LOANOPS_DEPLOY_TARGET",
    # Production keeps batch-job files in a bucket of its own.
    "LOANOPS_BATCH_STORAGE",
    "LOANOPS_BATCH_S3_BUCKET",
    "LOANOPS_BATCH_S3_ENDPOINT_URL",
    "LOANOPS_BATCH_S3_REGION",
    # Production tunes with workers on the work pool, sharing studies in its PostgreSQL.
    "LOANOPS_TUNE_WORKERS",
    "LOANOPS_TUNE_LAUNCHER",
    "LOANOPS_TUNE_STORAGE_URL",
}


def secret_variables() -> set[str]:
    """The pods' secret settings: SecretStr fields, those of `NOT_POD_VARIABLES` left out."""
    return {
        name
        for name, variable in VARIABLES.items()
        if SecretStr in getattr(variable.info.annotation, "__args__", (variable.info.annotation,))
        and name not in NOT_POD_VARIABLES
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


def test_the_excluded_variables_exist() -> None:
    assert set(NOT_POD_VARIABLES) <= set(VARIABLES)
    assert DEPLOYMENT_VARIABLES <= set(VARIABLES)
    assert secret_variables() == {
        "LOANOPS_API_KEYS",
        "LOANOPS_DATABASE_URL",
        "LOANOPS_TUNE_STORAGE_URL",
    }


def test_the_variables_include_every_group() -> None:
    groups = {variable.group for variable in VARIABLES.values()}
    assert groups == {
        None,
        "training",
        "gate",
        "monitor",
        "serving",
        "decision_log",
        "client",
        "batch",
        "kube",
    }


def test_configmap_and_secret_hold_exactly_the_pod_fields(rendered: Render) -> None:
    config = set(data(rendered.get("ConfigMap", CONFIG)))
    secrets = set(data(rendered.get("Secret", SECRETS)))
    assert config | secrets == set(VARIABLES) - set(NOT_POD_VARIABLES)
    assert secrets == secret_variables()
    assert not config & secrets


def test_every_loanops_variable_anywhere_is_a_settings_field(rendered: Render) -> None:
    known = set(VARIABLES)
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
    environment = {**pod_environment(renders["production"]), "LOANOPS_ENV": "dev"}
    configured = settings_from(environment, monkeypatch)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    differing = {
        name
        for name, variable in VARIABLES.items()
        if variable.value(configured) != variable.value(defaults)
    }
    assert differing - DEPLOYMENT_VARIABLES == set()


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
    assert environment["LOANOPS_ENV"] == "production"
    with pytest.raises(ValidationError, match="placeholder"):
        settings_from(environment, monkeypatch)
    real = {
        **environment,
        "LOANOPS_API_KEYS": "k3y-one,k3y-two",
        "LOANOPS_DATABASE_URL": "postgresql://decisions:s3cret@postgres:5432/decisions",
        "LOANOPS_TUNE_STORAGE_URL": "postgresql://optuna:s3cret@postgres:5432/optuna",
    }
    settings = settings_from(real, monkeypatch)
    assert settings.decision_db_url.startswith("postgresql://")
    assert (settings.batch.storage, settings.batch.s3_bucket) == ("s3", "loanops-batch-jobs")
    assert settings.serving.api_key_values == ("k3y-one", "k3y-two")
    assert (settings.training.tune_workers, settings.training.tune_launcher) == (4, "prefect")
    for name in ("LOANOPS_DATABASE_URL", "LOANOPS_TUNE_STORAGE_URL"):
        with pytest.raises(ValidationError, match=f"{name} holds a placeholder"):
            settings_from({**real, name: environment[name]}, monkeypatch)


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
