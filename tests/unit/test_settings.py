"""Settings: the LOANOPS_ environment, defaults, the embedded store, and no side effects."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from loanops.settings import Settings, get_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No LOANOPS_ variable from the caller's shell, no `.env` file, and a fresh cache."""
    for name in list(os.environ):
        if name.upper().startswith("LOANOPS_"):
            monkeypatch.delenv(name)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults_need_no_services() -> None:
    settings = Settings()
    assert settings.env == "dev"
    assert settings.home == Path(".loanops")
    assert settings.tracking_uri is None
    assert settings.dataset == "lending_club"
    assert settings.dataset_rows is None
    assert settings.seed == 42
    assert settings.model_families == ("logreg", "hist_gbt")
    assert (settings.test_size, settings.validation_size, settings.cv_folds) == (0.2, 0.25, 5)
    assert (settings.cost_false_approve, settings.cost_false_decline) == (5.0, 1.0)
    assert settings.promotion_min_auc == 0.65
    assert settings.promotion_max_ece == 0.05
    assert settings.promotion_auc_tolerance == 0.01
    assert settings.promotion_max_calibration_z == 3.0
    assert settings.promotion_min_gate_positives == 30
    assert (settings.production_alias, settings.previous_alias) == ("production", "previous")


def test_environment_variables_with_the_loanops_prefix_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOANOPS_SEED", "7")
    monkeypatch.setenv("LOANOPS_DATASET", "synthetic")
    monkeypatch.setenv("LOANOPS_DATASET_ROWS", "5000")
    monkeypatch.setenv("LOANOPS_MODEL_FAMILIES", '["logreg"]')
    monkeypatch.setenv("LOANOPS_TUNE_TIMEOUT_SECONDS", "12.5")
    settings = Settings()
    assert settings.seed == 7
    assert settings.dataset == "synthetic"
    assert settings.dataset_rows == 5000
    assert settings.model_families == ("logreg",)
    assert settings.tune_timeout_seconds == 12.5


def test_prefix_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("loanops_seed", "8")
    assert Settings().seed == 8


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEED", "7")
    monkeypatch.setenv("TRACKING_URI", "http://elsewhere:5000")
    settings = Settings()
    assert settings.seed == 42
    assert settings.tracking_uri is None


def test_dotenv_file_is_read_and_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("LOANOPS_SEED=9\nLOANOPS_CV_FOLDS=3\nOTHER_TOOL_SETTING=x\n")
    monkeypatch.setenv("LOANOPS_CV_FOLDS", "4")
    settings = Settings()
    assert settings.seed == 9
    assert settings.cv_folds == 4


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
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOANOPS_PROMOTION_AUC_TOLERANCE", "0.1"),
        ("LOANOPS_PROMOTION_AUC_TOLERANCE", "0"),
        ("LOANOPS_PROMOTION_MAX_ECE", "0.499"),
        ("LOANOPS_PROMOTION_MAX_CALIBRATION_Z", "0.5"),
        ("LOANOPS_PROMOTION_MIN_GATE_POSITIVES", "1"),
        ("LOANOPS_SEED", "0"),
        ("LOANOPS_SEED", str(2**32 - 1)),
        ("LOANOPS_MODEL_FAMILIES", '["hist_gbt"]'),
        ("LOANOPS_PRODUCTION_ALIAS", "champion-2024_q1"),
        ("LOANOPS_PREVIOUS_ALIAS", "V1beta"),
    ],
)
def test_values_at_and_inside_the_bounds_are_accepted(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    Settings()


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
    with pytest.raises(ValidationError, match=message) as raised:
        Settings(**{field: alias})
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


PRODUCTION = {"env": "production", "tracking_uri": "http://mlflow:5000"}


def test_outside_dev_api_keys_are_required() -> None:
    with pytest.raises(ValidationError, match="LOANOPS_API_KEYS must be set"):
        Settings(**PRODUCTION)


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("api_keys", "changethis", "LOANOPS_API_KEYS"),
        ("api_keys", "k-real-1, CHANGE_ME", "LOANOPS_API_KEYS"),
        ("api_keys", "<api-key>", "LOANOPS_API_KEYS"),
        ("database_url", "postgresql://loanops:changeme@db/loanops", "LOANOPS_DATABASE_URL"),
        ("database_url", "postgresql://loanops:REPLACE_ME@db/loanops", "LOANOPS_DATABASE_URL"),
    ],
)
def test_outside_dev_placeholder_secrets_are_refused_without_echoing_them(
    field: str, value: str, variable: str
) -> None:
    secrets = {"api_keys": "k-7f3a9c", field: value}
    with pytest.raises(ValidationError, match=f"{variable} holds a placeholder") as error:
        Settings(**PRODUCTION, **secrets)
    assert value not in str(error.value)


def test_in_dev_placeholders_and_missing_keys_are_tolerated() -> None:
    assert Settings().api_key_values == ()
    assert Settings(api_keys="changethis").api_key_values == ("changethis",)


def test_api_keys_are_comma_separated_and_hidden_from_reprs() -> None:
    settings = Settings(api_keys=" k1 ,k2,, k3 ")
    assert settings.api_key_values == ("k1", "k2", "k3")
    assert "k1" not in repr(settings)
    assert "k2" not in str(settings.model_dump())


def test_model_ref_defaults_to_the_production_alias_and_accepts_both_forms() -> None:
    assert Settings().model_uri == "models:/loan-default@production"
    assert Settings(model_name="pd", production_alias="live").model_uri == "models:/pd@live"
    assert Settings(model_ref="models:/pd/7").model_uri == "models:/pd/7"
    assert Settings(model_ref="models:/pd@champion").model_uri == "models:/pd@champion"


@pytest.mark.parametrize(
    "ref", ["models:/pd", "models:/pd/latest", "runs:/abc/model", "models:/pd@", "pd/7"]
)
def test_model_ref_must_name_an_alias_or_a_version(ref: str) -> None:
    with pytest.raises(ValidationError, match="models:/NAME@ALIAS or models:/NAME/VERSION"):
        Settings(model_ref=ref)


def test_decision_log_and_storage_default_under_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.decision_db_url == f"sqlite:///{tmp_path / 'decisions.db'}"
    assert settings.storage_path == tmp_path / "storage"
    url = "postgresql://loanops:s3cret@db/loanops"
    with_password = Settings(database_url=url)
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
    assert first.seed == 1
    get_settings.cache_clear()
    assert get_settings().seed == 2


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
