"""Settings: the LOANOPS_ environment, defaults, the embedded store, and no side effects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from loanops.settings import (
    DecisionLogSettings,
    GateSettings,
    ServingSettings,
    Settings,
    get_settings,
)

pytestmark = pytest.mark.usefixtures("no_loanops_environment")


def test_defaults_need_no_services() -> None:
    settings = Settings()
    assert settings.env == "dev"
    assert settings.tracking_uri is None
    assert settings.batch.redis_url is None
    assert settings.decision_log.database_url is None
    assert settings.kube.deploy_target == "none"
    home = settings.home.resolve()
    assert settings.mlflow_uri == f"sqlite:///{home / 'mlflow.db'}"
    assert settings.decision_db_url == f"sqlite:///{home / 'decisions.db'}"


def test_environment_variables_with_the_loanops_prefix_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOANOPS_SEED", "7")
    monkeypatch.setenv("LOANOPS_DATASET", "synthetic")
    monkeypatch.setenv("LOANOPS_DATASET_ROWS", "5000")
    monkeypatch.setenv("LOANOPS_MODEL_FAMILIES", '["logreg"]')
    monkeypatch.setenv("LOANOPS_TUNE_TIMEOUT_SECONDS", "12.5")
    settings = Settings()
    assert settings.training.seed == 7
    assert settings.training.dataset == "synthetic"
    assert settings.training.dataset_rows == 5000
    assert settings.training.model_families == ("logreg",)
    assert settings.training.tune_timeout_seconds == 12.5


def test_prefix_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("loanops_seed", "8")
    assert Settings().training.seed == 8


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEED", "7")
    monkeypatch.setenv("TRACKING_URI", "http://elsewhere:5000")
    settings = Settings()
    assert settings.training.seed == 42
    assert settings.tracking_uri is None


def test_dotenv_file_is_read_and_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("LOANOPS_SEED=9\nLOANOPS_CV_FOLDS=3\nOTHER_TOOL_SETTING=x\n")
    monkeypatch.setenv("LOANOPS_CV_FOLDS", "4")
    settings = Settings()
    assert settings.training.seed == 9
    assert settings.training.cv_folds == 4


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOANOPS_TEST_SIZE", "0.5"),
        ("LOANOPS_CV_FOLDS", "1"),
        ("LOANOPS_DATASET_ROWS", "0"),
        ("LOANOPS_PROMOTION_MIN_AUC", "0.4"),
        ("LOANOPS_MODEL_FAMILIES", '["forest"]'),
        ("LOANOPS_ENV", "qa"),
        ("LOANOPS_PROMOTION_AUC_TOLERANCE", "0.11"),
        ("LOANOPS_PROMOTION_AUC_TOLERANCE", "-0.01"),
        ("LOANOPS_PROMOTION_MAX_ECE", "0.5"),
        ("LOANOPS_PROMOTION_MAX_ECE", "0"),
        ("LOANOPS_PROMOTION_MAX_CALIBRATION_Z", "0"),
        ("LOANOPS_PROMOTION_MIN_GATE_POSITIVES", "0"),
        ("LOANOPS_SEED", "-1"),
        ("LOANOPS_SEED", str(2**32)),
    ],
)
def test_out_of_bounds_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    # One error, located on the variable itself: not a model-level check that happens to fail.
    (error,) = raised.value.errors()
    assert name in error["loc"] or error["loc"] == (name.removeprefix("LOANOPS_").lower(),)


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("LOANOPS_PROMOTION_AUC_TOLERANCE", "0.1", "gate.auc_tolerance", 0.1),
        ("LOANOPS_PROMOTION_AUC_TOLERANCE", "0", "gate.auc_tolerance", 0.0),
        ("LOANOPS_PROMOTION_MAX_ECE", "0.499", "gate.max_ece", 0.499),
        ("LOANOPS_PROMOTION_MAX_CALIBRATION_Z", "0.5", "gate.max_calibration_z", 0.5),
        ("LOANOPS_PROMOTION_MIN_GATE_POSITIVES", "1", "gate.min_gate_positives", 1),
        ("LOANOPS_SEED", "0", "training.seed", 0),
        ("LOANOPS_SEED", str(2**32 - 1), "training.seed", 2**32 - 1),
        ("LOANOPS_MODEL_FAMILIES", '["hist_gbt"]', "training.model_families", ("hist_gbt",)),
        ("LOANOPS_PRODUCTION_ALIAS", "champion-2024_q1", "production_alias", "champion-2024_q1"),
        ("LOANOPS_PREVIOUS_ALIAS", "V1beta", "previous_alias", "V1beta"),
    ],
)
def test_values_at_and_inside_the_bounds_are_accepted(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str, expected: object
) -> None:
    monkeypatch.setenv(name, value)
    read: Any = Settings()
    for part in field.split("."):
        read = getattr(read, part)
    assert read == expected


@pytest.mark.parametrize(
    ("families", "message"),
    [
        ("[]", "name at least one model family"),
        ('["logreg", "hist_gbt", "logreg"]', "each model family may appear once; repeated: logreg"),
    ],
)
def test_model_families_must_be_non_empty_and_unique(
    monkeypatch: pytest.MonkeyPatch, families: str, message: str
) -> None:
    monkeypatch.setenv("LOANOPS_MODEL_FAMILIES", families)
    with pytest.raises(ValidationError, match=message):
        Settings()


@pytest.mark.parametrize("field", ["production_alias", "previous_alias"])
@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("", "must be non-empty and use only letters, digits, '_' and '-'"),
        ("prod alias", "'prod alias' must be non-empty and use only letters, digits"),
        ("prod.1", "'prod.1' must be non-empty and use only letters, digits"),
        ("prodé", "use only letters, digits"),
        ("a" * 256, "at most 255 characters"),
        ("latest", "'latest' is reserved by MLflow"),
        ("LATEST", "'latest' is reserved by MLflow"),
        ("v3", r"'v3' looks like a version \(v<digits>\), which MLflow reserves"),
        ("V12", "'V12' looks like a version"),
    ],
)
def test_aliases_follow_mlflows_alias_rules(field: str, alias: str, message: str) -> None:
    overrides: dict[str, Any] = {field: alias}
    with pytest.raises(ValidationError, match=message) as raised:
        Settings(**overrides)
    assert raised.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(("production", "previous"), [("champion", "champion"), ("prod", "PROD")])
def test_production_and_previous_aliases_must_differ(production: str, previous: str) -> None:
    with pytest.raises(ValidationError, match="name the same alias; they must differ"):
        Settings(production_alias=production, previous_alias=previous)


def test_mlflow_itself_accepts_every_alias_the_settings_accept() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import (
        _validate_model_alias_name,
        _validate_model_alias_name_reserved,
    )

    for alias in ("production", "previous", "champion-2024_q1", "V1beta", "v", "a" * 255):
        Settings(production_alias=alias, previous_alias="other")
        _validate_model_alias_name(alias)
        _validate_model_alias_name_reserved(alias)
    for alias in ("", "prod alias", "latest", "Latest", "v3", "a" * 256):
        with pytest.raises(MlflowException):
            _validate_model_alias_name(alias)
            _validate_model_alias_name_reserved(alias)
        with pytest.raises(ValidationError):
            Settings(production_alias=alias)


def test_mlflow_uri_defaults_to_sqlite_under_home(tmp_path: Path) -> None:
    home = tmp_path / "state"
    settings = Settings(home=home)
    assert settings.mlflow_uri == f"sqlite:///{home.resolve() / 'mlflow.db'}"
    assert settings.artifact_location == (home.resolve() / "artifacts").as_uri()


def test_relative_home_resolves_against_the_working_directory() -> None:
    expected = Path.cwd().resolve() / ".loanops" / "mlflow.db"
    assert Settings().mlflow_uri == f"sqlite:///{expected}"


def test_tracking_uri_takes_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOANOPS_TRACKING_URI", "http://mlflow:5000")
    assert Settings().mlflow_uri == "http://mlflow:5000"


def test_computed_fields_are_part_of_the_dump(tmp_path: Path) -> None:
    dumped = Settings(home=tmp_path).model_dump()
    assert dumped["mlflow_uri"].startswith("sqlite:///")
    assert dumped["artifact_location"].startswith("file://")


@pytest.mark.parametrize("env", ["staging", "production"])
def test_refuses_non_dev_environment_without_a_tracking_uri(
    monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    monkeypatch.setenv("LOANOPS_ENV", env)
    with pytest.raises(ValidationError, match="LOANOPS_TRACKING_URI must be set outside dev"):
        Settings()


def test_refuses_non_dev_environment_with_an_empty_tracking_uri() -> None:
    with pytest.raises(ValidationError, match="LOANOPS_TRACKING_URI"):
        Settings(env="production", tracking_uri="")


def test_non_dev_environment_with_a_tracking_uri_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOANOPS_ENV", "production")
    monkeypatch.setenv("LOANOPS_TRACKING_URI", "postgresql://mlflow@db/mlflow")
    monkeypatch.setenv("LOANOPS_API_KEYS", "k-7f3a9c")
    settings = Settings()
    assert settings.env == "production"
    assert settings.mlflow_uri == "postgresql://mlflow@db/mlflow"


PRODUCTION: dict[str, Any] = {"env": "production", "tracking_uri": "http://mlflow:5000"}


def test_outside_dev_api_keys_are_required() -> None:
    with pytest.raises(ValidationError, match="LOANOPS_API_KEYS must be set"):
        Settings(**PRODUCTION)


@pytest.mark.parametrize(
    ("group", "field", "value", "variable"),
    [
        ("serving", "api_keys", "changethis", "LOANOPS_API_KEYS"),
        ("serving", "api_keys", "k-real-1, CHANGE_ME", "LOANOPS_API_KEYS"),
        ("serving", "api_keys", "<api-key>", "LOANOPS_API_KEYS"),
        (
            "decision_log",
            "database_url",
            "postgresql://loanops:changeme@db/loanops",
            "LOANOPS_DATABASE_URL",
        ),
        (
            "decision_log",
            "database_url",
            "postgresql://loanops:REPLACE_ME@db/loanops",
            "LOANOPS_DATABASE_URL",
        ),
    ],
)
def test_outside_dev_placeholder_secrets_are_refused_without_echoing_them(
    group: str, field: str, value: str, variable: str
) -> None:
    secrets: dict[str, Any] = {"serving": {"api_keys": "k-7f3a9c"}}
    secrets[group] = {**secrets.get(group, {}), field: value}
    with pytest.raises(ValidationError, match=f"{variable} holds a placeholder") as error:
        Settings(**PRODUCTION, **secrets)
    assert value not in str(error.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOANOPS_API_KEYS", "changethis"),
        ("LOANOPS_DATABASE_URL", "postgresql://loanops:changeme@db/loanops"),
    ],
)
def test_outside_dev_placeholder_secrets_in_the_environment_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("LOANOPS_ENV", "production")
    monkeypatch.setenv("LOANOPS_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("LOANOPS_API_KEYS", "k-7f3a9c")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=f"{variable} holds a placeholder") as error:
        Settings()
    assert value not in str(error.value)


def test_in_dev_placeholders_and_missing_keys_are_tolerated() -> None:
    assert Settings().serving.api_key_values == ()
    assert Settings(
        serving=ServingSettings(api_keys=SecretStr("changethis"))
    ).serving.api_key_values == ("changethis",)


def test_api_keys_are_comma_separated_and_hidden_from_reprs() -> None:
    settings = Settings(serving=ServingSettings(api_keys=SecretStr(" k1 ,k2,, k3 ")))
    assert settings.serving.api_key_values == ("k1", "k2", "k3")
    assert "k1" not in repr(settings)
    assert "k2" not in str(settings.model_dump())


def test_model_ref_defaults_to_the_production_alias_and_accepts_both_forms() -> None:
    assert Settings().model_uri == "models:/loan-default@production"
    assert Settings(model_name="pd", production_alias="live").model_uri == "models:/pd@live"
    assert Settings(serving=ServingSettings(model_ref="models:/pd/7")).model_uri == "models:/pd/7"
    assert (
        Settings(serving=ServingSettings(model_ref="models:/pd@champion")).model_uri
        == "models:/pd@champion"
    )


@pytest.mark.parametrize(
    "ref", ["models:/pd", "models:/pd/latest", "runs:/abc/model", "models:/pd@", "pd/7"]
)
def test_model_ref_must_name_an_alias_or_a_version(ref: str) -> None:
    with pytest.raises(ValidationError, match="models:/NAME@ALIAS or models:/NAME/VERSION"):
        Settings(serving=ServingSettings(model_ref=ref))


def test_decision_log_and_storage_default_under_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.decision_db_url == f"sqlite:///{tmp_path / 'decisions.db'}"
    assert settings.storage_path == tmp_path / "storage"
    url = "postgresql://loanops:s3cret@db/loanops"
    with_password = Settings(decision_log=DecisionLogSettings(database_url=SecretStr(url)))
    assert with_password.decision_db_url == url
    assert "s3cret" not in repr(with_password)
    assert "s3cret" not in str(with_password.model_dump())


def test_constructing_settings_creates_no_folders_or_files(tmp_path: Path) -> None:
    home = tmp_path / "state"
    settings = Settings(home=home)
    settings.model_dump()
    assert settings.mlflow_uri and settings.artifact_location
    default = Settings()
    default.model_dump()
    assert not home.exists()
    assert list(Path.cwd().iterdir()) == []


def test_get_settings_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOANOPS_SEED", "1")
    first = get_settings()
    monkeypatch.setenv("LOANOPS_SEED", "2")
    assert get_settings() is first
    assert first.training.seed == 1
    get_settings.cache_clear()
    assert get_settings().training.seed == 2


# Every variable of the flat settings, where it lives now, a valid value and what it reads as.
WHERE_EACH_VARIABLE_LIVES: dict[str, tuple[str, str, Any]] = {
    "LOANOPS_DATASET": ("training.dataset", "synthetic", "synthetic"),
    "LOANOPS_DATASET_ROWS": ("training.dataset_rows", "5000", 5000),
    "LOANOPS_SOURCE_DATABASE_URL": (
        "training.source_database_url",
        "postgresql://db/tape",
        "postgresql://db/tape",
    ),
    "LOANOPS_SEED": ("training.seed", "7", 7),
    "LOANOPS_TEST_SIZE": ("training.test_size", "0.3", 0.3),
    "LOANOPS_VALIDATION_SIZE": ("training.validation_size", "0.2", 0.2),
    "LOANOPS_CV_FOLDS": ("training.cv_folds", "3", 3),
    "LOANOPS_TUNE_TRIALS": ("training.tune_trials", "4", 4),
    "LOANOPS_TUNE_TIMEOUT_SECONDS": ("training.tune_timeout_seconds", "12.5", 12.5),
    "LOANOPS_MODEL_FAMILIES": ("training.model_families", '["logreg"]', ("logreg",)),
    "LOANOPS_BOOTSTRAP_SAMPLES": ("training.bootstrap_samples", "200", 200),
    "LOANOPS_COST_FALSE_APPROVE": ("training.cost_false_approve", "6", 6.0),
    "LOANOPS_COST_FALSE_DECLINE": ("training.cost_false_decline", "2", 2.0),
    "LOANOPS_VALIDATION_MIN_POSITIVES": ("training.validation_min_positives", "10", 10),
    "LOANOPS_VALIDATION_UNKNOWN_CATEGORY_TOLERANCE": (
        "training.validation_unknown_category_tolerance",
        "0.01",
        0.01,
    ),
    "LOANOPS_PROMOTION_EXPERIMENT_NAME": ("gate.experiment_name", "gate-log", "gate-log"),
    "LOANOPS_PROMOTION_MIN_AUC": ("gate.min_auc", "0.7", 0.7),
    "LOANOPS_PROMOTION_MAX_ECE": ("gate.max_ece", "0.04", 0.04),
    "LOANOPS_PROMOTION_AUC_TOLERANCE": ("gate.auc_tolerance", "0.02", 0.02),
    "LOANOPS_PROMOTION_MAX_CALIBRATION_Z": ("gate.max_calibration_z", "2.5", 2.5),
    "LOANOPS_PROMOTION_MIN_GATE_POSITIVES": ("gate.min_gate_positives", "40", 40),
    "LOANOPS_TUNE_WORKERS": ("training.tune_workers", "1", 1),
    "LOANOPS_TUNE_LAUNCHER": ("training.tune_launcher", "prefect", "prefect"),
    "LOANOPS_TUNE_HEARTBEAT_SECONDS": ("training.tune_heartbeat_seconds", "5", 5),
    "LOANOPS_TUNE_STORAGE_URL": (
        "training.tune_storage_url",
        "postgresql://db/o",
        "postgresql://db/o",
    ),
    "LOANOPS_PROMOTION_MIN_ADVERSE_IMPACT_RATIO": ("gate.min_adverse_impact_ratio", "0.75", 0.75),
    "LOANOPS_PROMOTION_ADVERSE_IMPACT_TOLERANCE": ("gate.adverse_impact_tolerance", "0.1", 0.1),
    "LOANOPS_PROMOTION_MIN_GROUP_ROWS": ("gate.min_group_rows", "50", 50),
    "LOANOPS_PROMOTION_MAKER_CHECKER": ("gate.maker_checker", "true", True),
    "LOANOPS_PROMOTION_APPROVAL_TIMEOUT_SECONDS": ("gate.approval_timeout_seconds", "600", 600),
    "LOANOPS_PROMOTION_APPROVAL_POLL_SECONDS": ("gate.approval_poll_seconds", "2", 2),
    "LOANOPS_MONITORING_EXPERIMENT_NAME": ("monitor.experiment_name", "watch", "watch"),
    "LOANOPS_MONITOR_WINDOW_DAYS": ("monitor.window_days", "3", 3.0),
    "LOANOPS_MONITOR_SAMPLE_ROWS": ("monitor.sample_rows", "2000", 2000),
    "LOANOPS_MONITOR_DISTANCE_THRESHOLD": ("monitor.distance_threshold", "0.2", 0.2),
    "LOANOPS_MONITOR_P_VALUE_THRESHOLD": ("monitor.p_value_threshold", "0.01", 0.01),
    "LOANOPS_MONITOR_MIN_ROWS_FOR_DISTANCE": ("monitor.min_rows_for_distance", "900", 900),
    "LOANOPS_MONITOR_NULL_RATE_INCREASE": ("monitor.null_rate_increase", "0.1", 0.1),
    "LOANOPS_MONITOR_OUT_OF_RANGE_SHARE": ("monitor.out_of_range_share", "0.02", 0.02),
    "LOANOPS_MONITOR_UNSEEN_CATEGORY_SHARE": ("monitor.unseen_category_share", "0.05", 0.05),
    "LOANOPS_DRIFT_SHARE_THRESHOLD": ("monitor.drift_share_threshold", "0.3", 0.3),
    "LOANOPS_PREDICTION_PSI_THRESHOLD": ("monitor.prediction_psi_threshold", "0.2", 0.2),
    "LOANOPS_CALIBRATION_Z_THRESHOLD": ("monitor.calibration_z_threshold", "2", 2.0),
    "LOANOPS_AUC_DROP_THRESHOLD": ("monitor.auc_drop_threshold", "0.1", 0.1),
    "LOANOPS_RETRAIN_TRIGGER": ("monitor.retrain_trigger", "event", "event"),
    "LOANOPS_MODEL_REF": ("serving.model_ref", "models:/pd/7", "models:/pd/7"),
    "LOANOPS_MODEL_POLL_SECONDS": ("serving.model_poll_seconds", "5", 5.0),
    "LOANOPS_MODEL_LOAD_MAX_BACKOFF_SECONDS": (
        "serving.model_load_max_backoff_seconds",
        "60",
        60.0,
    ),
    "LOANOPS_REASONS_TOP": ("serving.reasons_top", "3", 3),
    "LOANOPS_MAX_SYNC_BATCH": ("serving.max_sync_batch", "10", 10),
    "LOANOPS_MAX_BODY_BYTES": ("serving.max_body_bytes", "2048", 2048),
    "LOANOPS_BODY_TIMEOUT_SECONDS": ("serving.body_timeout_seconds", "3.5", 3.5),
    "LOANOPS_MAX_UPLOAD_BYTES": ("serving.max_upload_bytes", "4096", 4096),
    "LOANOPS_CHALLENGER_ALIAS": ("serving.challenger_alias", "rival", "rival"),
    "LOANOPS_CHALLENGER_SHARE": ("serving.challenger_share", "0.05", 0.05),
    "LOANOPS_CHALLENGER_SEED": ("serving.challenger_seed", "7", 7),
    "LOANOPS_API_KEYS": ("serving.api_keys", "k1,k2", "k1,k2"),
    "LOANOPS_DATABASE_URL": ("decision_log.database_url", "postgresql://db/x", "postgresql://db/x"),
    "LOANOPS_DECISION_LOG_BATCH_SIZE": ("decision_log.batch_size", "50", 50),
    "LOANOPS_DECISION_LOG_FLUSH_SECONDS": ("decision_log.flush_seconds", "1.5", 1.5),
    "LOANOPS_DECISION_LOG_READY_BACKLOG": ("decision_log.ready_backlog", "70", 70),
    "LOANOPS_DECISION_LOG_MEMORY_BACKLOG": ("decision_log.memory_backlog", "900", 900),
    "LOANOPS_DECISION_LOG_WRITER_NICE": ("decision_log.writer_nice", "5", 5),
    "LOANOPS_REDIS_URL": ("batch.redis_url", "redis://r:6379/0", "redis://r:6379/0"),
    "LOANOPS_STORAGE_DIR": ("batch.storage_dir", "/var/jobs", Path("/var/jobs")),
    "LOANOPS_BATCH_STORAGE": ("batch.storage", "s3", "s3"),
    "LOANOPS_BATCH_S3_BUCKET": ("batch.s3_bucket", "jobs", "jobs"),
    "LOANOPS_BATCH_S3_PREFIX": ("batch.s3_prefix", "prod/jobs", "prod/jobs"),
    "LOANOPS_BATCH_S3_ENDPOINT_URL": (
        "batch.s3_endpoint_url",
        "https://s3.example.com",
        "https://s3.example.com",
    ),
    "LOANOPS_BATCH_S3_REGION": ("batch.s3_region", "eu-west-1", "eu-west-1"),
    "LOANOPS_BATCH_CHUNK_ROWS": ("batch.chunk_rows", "1000", 1000),
    "LOANOPS_BATCH_VISIBILITY_SECONDS": ("batch.visibility_seconds", "60", 60.0),
    "LOANOPS_DEPLOY_TARGET": ("kube.deploy_target", "kubernetes", "kubernetes"),
    "LOANOPS_KUBE_CONFIG": ("kube.config", "/k/config", Path("/k/config")),
    "LOANOPS_KUBE_NAMESPACE": ("kube.namespace", "ns", "ns"),
    "LOANOPS_KUBE_DEPLOYMENTS": ("kube.deployments", '{"api": "web"}', {"api": "web"}),
    "LOANOPS_ROLLOUT_TIMEOUT_SECONDS": ("kube.rollout_timeout_seconds", "600", 600.0),
    "LOANOPS_API_URL": ("client.url", "https://api.example", "https://api.example"),
    "LOANOPS_API_KEY": ("client.key", "k-client", "k-client"),
}
ROOT_VARIABLES = {
    "LOANOPS_ENV": "env",
    "LOANOPS_HOME": "home",
    "LOANOPS_TRACKING_URI": "tracking_uri",
    "LOANOPS_TRACKING_RETRY_DELAY_SECONDS": "tracking_retry_delay_seconds",
    "LOANOPS_EXPERIMENT_NAME": "experiment_name",
    "LOANOPS_MODEL_NAME": "model_name",
    "LOANOPS_PRODUCTION_ALIAS": "production_alias",
    "LOANOPS_PREVIOUS_ALIAS": "previous_alias",
}


def value_at(settings: Settings, path: str) -> Any:
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def test_the_variables_are_the_flat_names_each_in_its_group() -> None:
    variables = Settings.environment_variables()
    assert {name: v.path for name, v in variables.items()} == {
        **ROOT_VARIABLES,
        **{name: path for name, (path, _, _) in WHERE_EACH_VARIABLE_LIVES.items()},
    }
    for variable in variables.values():
        assert variable.name == f"LOANOPS_{variable.flat_name.upper()}"


@pytest.mark.parametrize("source", ["environment", "dotenv"])
def test_every_grouped_variable_lands_in_its_group(
    monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    if source == "environment":
        for name, (_, raw, _) in WHERE_EACH_VARIABLE_LIVES.items():
            monkeypatch.setenv(name, raw)
    else:
        lines = [f"{name}='{raw}'" for name, (_, raw, _) in WHERE_EACH_VARIABLE_LIVES.items()]
        Path(".env").write_text("\n".join(lines) + "\n")
    settings = Settings()
    for name, (path, _, expected) in WHERE_EACH_VARIABLE_LIVES.items():
        assert value_at(settings, path) == expected, name


def test_grouped_variables_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("loanops_promotion_min_auc", "0.8")
    monkeypatch.setenv("Loanops_Redis_Url", "redis://r/1")
    settings = Settings()
    assert settings.gate.min_auc == 0.8
    assert settings.batch.redis_url == "redis://r/1"


def test_a_grouped_variable_in_the_environment_wins_over_dotenv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Path(".env").write_text("LOANOPS_PROMOTION_MIN_AUC=0.7\nLOANOPS_PROMOTION_MAX_ECE=0.04\n")
    monkeypatch.setenv("LOANOPS_PROMOTION_MIN_AUC", "0.8")
    settings = Settings()
    assert (settings.gate.min_auc, settings.gate.max_ece) == (0.8, 0.04)
    assert Settings(_env_file=None).gate.max_ece == 0.05  # type: ignore[call-arg]


@pytest.mark.parametrize("source", ["environment", "dotenv"])
def test_a_validation_error_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    if source == "environment":
        monkeypatch.setenv("LOANOPS_DRIFT_SHARE_THRESHOLD", "1.5")
    else:
        Path(".env").write_text("LOANOPS_DRIFT_SHARE_THRESHOLD=1.5\n")
    with pytest.raises(ValidationError, match="LOANOPS_DRIFT_SHARE_THRESHOLD") as raised:
        Settings()
    assert raised.value.errors()[0]["loc"] == ("monitor", "LOANOPS_DRIFT_SHARE_THRESHOLD")
    assert "1.5" not in str(raised.value)


def test_unparsable_json_in_a_grouped_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOANOPS_KUBE_DEPLOYMENTS", "{not json")
    with pytest.raises(SettingsError, match="LOANOPS_KUBE_DEPLOYMENTS"):
        Settings()


def test_the_group_variables_are_not_new_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the flat names set a group: LOANOPS_GATE is nobody's variable.
    monkeypatch.setenv("LOANOPS_GATE", '{"min_auc": 0.9}')
    assert Settings().gate.min_auc == 0.65


@pytest.mark.parametrize(
    "gate",
    [GateSettings(min_auc=0.7), {"min_auc": 0.7}],
    ids=["instance", "dict"],
)
def test_overrides_replace_only_the_fields_they_name(
    monkeypatch: pytest.MonkeyPatch, gate: Any
) -> None:
    monkeypatch.setenv("LOANOPS_PROMOTION_MIN_AUC", "0.9")
    monkeypatch.setenv("LOANOPS_PROMOTION_MAX_ECE", "0.04")
    settings = Settings(gate=gate)
    assert (settings.gate.min_auc, settings.gate.max_ece) == (0.7, 0.04)
    assert settings.gate.auc_tolerance == 0.01


def test_an_override_is_validated_with_the_variable_it_stands_for() -> None:
    # Raw input, as a caller may pass it: pydantic validates a mapping into the group.
    too_low: dict[str, Any] = {"gate": {"min_auc": 0.4}}
    misspelt: dict[str, Any] = {"gate": {"min_acu": 0.7}}
    with pytest.raises(ValidationError) as raised:
        Settings(**too_low)
    assert raised.value.errors()[0]["loc"] == ("gate", "LOANOPS_PROMOTION_MIN_AUC")
    with pytest.raises(ValidationError, match="min_acu"):
        Settings(**misspelt)


# The flat names below are held in variables, so that a rewrite of the call sites leaves them.
@pytest.mark.parametrize(
    ("flat", "place"), [("promotion_min_auc", "gate.min_auc"), ("redis_url", "batch.redis_url")]
)
def test_a_flat_keyword_is_refused_with_its_new_place(flat: str, place: str) -> None:
    keyword: dict[str, Any] = {flat: "1"}
    with pytest.raises(TypeError, match=f"{flat}=, which is {place} now"):
        Settings(**keyword)


@pytest.mark.parametrize(
    ("flat", "message"),
    [
        ("drift_share_threshold", r"'drift_share_threshold': it is monitor\.drift_share_threshold"),
        ("no_such_setting", "'no_such_setting'$"),
    ],
)
def test_a_flat_attribute_says_where_it_went(flat: str, message: str) -> None:
    with pytest.raises(AttributeError, match=message):
        getattr(Settings(), flat)


def test_groups_are_part_of_the_dump_and_hide_their_secrets() -> None:
    dumped = Settings(
        serving=ServingSettings(api_keys=SecretStr("k-secret")),
        decision_log=DecisionLogSettings(database_url=SecretStr("postgresql://u:pw@db/x")),
    ).model_dump()
    assert dumped["gate"]["min_auc"] == 0.65
    assert dumped["kube"]["deployments"] == {"loanops-api": "api", "loanops-worker": "worker"}
    assert "k-secret" not in str(dumped)
    assert "pw@" not in str(dumped)


def test_every_monitor_threshold_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from loanops.monitoring.thresholds import MonitorThresholds, monitor_thresholds

    configured = {
        "LOANOPS_MONITOR_DISTANCE_THRESHOLD": "0.2",
        "LOANOPS_MONITOR_P_VALUE_THRESHOLD": "0.01",
        "LOANOPS_MONITOR_MIN_ROWS_FOR_DISTANCE": "1000",
        "LOANOPS_DRIFT_SHARE_THRESHOLD": "0.5",
        "LOANOPS_PREDICTION_PSI_THRESHOLD": "0.3",
        "LOANOPS_MONITOR_NULL_RATE_INCREASE": "0.1",
        "LOANOPS_MONITOR_OUT_OF_RANGE_SHARE": "0.02",
        "LOANOPS_MONITOR_UNSEEN_CATEGORY_SHARE": "0.05",
    }
    for name, value in configured.items():
        monkeypatch.setenv(name, value)
    thresholds = monitor_thresholds(Settings())
    defaults = MonitorThresholds()
    changed = {
        name
        for name in MonitorThresholds.model_fields
        if getattr(thresholds, name) != getattr(defaults, name)
    }
    assert changed == set(MonitorThresholds.model_fields)
    assert (thresholds.distance, thresholds.min_rows_for_distance) == (0.2, 1000)


def test_monitor_threshold_defaults_are_the_settings_defaults() -> None:
    from loanops.monitoring.thresholds import MonitorThresholds, monitor_thresholds

    assert monitor_thresholds(Settings()) == MonitorThresholds()
