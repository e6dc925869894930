"""Kubernetes settings: whether `retrain` deploys, and the Deployments the deploy flow pins."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from loanops.settings.environment import SettingsGroup, variables_prefixed

# Kubernetes names: namespaces and container names are DNS labels (RFC 1123). Deployment names
# may be longer subdomains, but ours are Service-like labels, and one rule is easier to read.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_MAX_DNS_LABEL_LENGTH = 63


class KubeSettings(SettingsGroup):
    """The deploy flow's cluster; fields are read from `LOANOPS_KUBE_<FIELD>`, the target and the
    timeout from `LOANOPS_DEPLOY_TARGET` and `LOANOPS_ROLLOUT_TIMEOUT_SECONDS`."""

    model_config = variables_prefixed("KUBE_")

    deploy_target: Literal["none", "kubernetes"] = Field(
        default="none",
        validation_alias="LOANOPS_DEPLOY_TARGET",
        description=(
            "Where `retrain` rolls out a promoted version: `none` stops at the registry, so local "
            "runs never touch a cluster; `kubernetes` runs the deploy flow after the promotion."
        ),
    )
    config: Path | None = Field(
        default=None,
        description=(
            "Kubeconfig file the deploy flow reaches the cluster with. Unset: the pod's own "
            "service account inside the cluster, else KUBECONFIG or ~/.kube/config, as kubectl."
        ),
    )
    namespace: str = Field(
        default="loan-default-prediction",
        description="Namespace of the Deployments the deploy flow pins.",
    )
    deployments: dict[str, str] = Field(
        default_factory=lambda: {"loanops-api": "api", "loanops-worker": "worker"},
        description=(
            "The Deployments the deploy flow pins to a model version, each with the name of the "
            "container that loads the model."
        ),
    )
    rollout_timeout_seconds: float = Field(
        default=1800.0,
        gt=0,
        validation_alias="LOANOPS_ROLLOUT_TIMEOUT_SECONDS",
        description=(
            "Longest the deploy flow waits for the Deployments to roll out before it rolls them "
            "back; a backstop behind each Deployment's own progressDeadlineSeconds."
        ),
    )

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_dns_label(cls, namespace: str) -> str:
        if not _DNS_LABEL.fullmatch(namespace) or len(namespace) > _MAX_DNS_LABEL_LENGTH:
            raise ValueError(
                f"namespace {namespace!r} must be a DNS label: at most 63 lowercase letters, "
                "digits and '-', starting and ending with a letter or digit"
            )
        return namespace

    @field_validator("deployments")
    @classmethod
    def _deployments_name_objects_kubernetes_accepts(
        cls, deployments: dict[str, str]
    ) -> dict[str, str]:
        if not deployments:
            raise ValueError("name at least one Deployment for the deploy flow to pin")
        for deployment, container in deployments.items():
            for what, name in (("Deployment", deployment), ("container", container)):
                if not _DNS_LABEL.fullmatch(name) or len(name) > _MAX_DNS_LABEL_LENGTH:
                    raise ValueError(
                        f"{what} name {name!r} must be a DNS label: at most 63 lowercase "
                        "letters, digits and '-', starting and ending with a letter or digit"
                    )
        return deployments
