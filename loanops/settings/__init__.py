"""Runtime configuration: one pydantic-settings object, read through `get_settings()`.

`Settings` holds where things are (`home`, `tracking_uri`) and what the model is called at the
top, and one group per concern: `training`, `gate`, `monitor`, `serving`, `decision_log`,
`batch`, `kube`, and `client` (the API the CLI calls). The environment variables stay flat,
`LOANOPS_<NAME>`, because the Kubernetes ConfigMap and Secret and the compose file use exactly
these names: `LOANOPS_PROMOTION_MIN_AUC` sets `settings.gate.min_auc`.
`Settings.environment_variables()` lists them all.

A new setting goes in the group of its concern, named without the group's prefix:
`max_backlog` in `DecisionLogSettings` is read from `LOANOPS_DECISION_LOG_MAX_BACKLOG`. A variable
that does not follow the group's prefix names itself with `validation_alias="LOANOPS_..."`. Tests
override a group field by field, over the environment: `Settings(gate=GateSettings(min_auc=0.7))`.
"""

from loanops.settings.batch import BatchSettings
from loanops.settings.client import ClientSettings
from loanops.settings.decision_log import DecisionLogSettings
from loanops.settings.environment import ENV_PREFIX, SettingsGroup, Variable
from loanops.settings.gate import GateSettings
from loanops.settings.kube import KubeSettings
from loanops.settings.monitor import MonitorSettings
from loanops.settings.root import TRACKING_RETRY_COUNT, Settings, get_settings
from loanops.settings.serving import ServingSettings
from loanops.settings.training import ModelFamily, TrainingSettings

__all__ = [
    "ENV_PREFIX",
    "BatchSettings",
    "ClientSettings",
    "DecisionLogSettings",
    "GateSettings",
    "KubeSettings",
    "ModelFamily",
    "MonitorSettings",
    "TRACKING_RETRY_COUNT",
    "ServingSettings",
    "Settings",
    "SettingsGroup",
    "TrainingSettings",
    "Variable",
    "get_settings",
]
