"""Kubernetes objects for the deploy tests, in the shapes the API server returns.

Every object starts as the dict an API server would send. `as_model` checks that dict against
the Kubernetes OpenAPI schema (kubernetes-validate, strict: an unknown or misspelled key fails)
and turns it into the `kubernetes` client's model object through the client's own deserializer,
so a fixture cannot be a shape the API never sends. The Deployments are the manifests' own
(`manifests/rendered/production.yaml`), with what the API server and the deployment controller
add: uid, generation, status, revision.
"""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import kubernetes_validate
import yaml
from kubernetes.client import ApiClient

from flows.deploy.rollout import (
    MODEL_REF_ENV,
    POD_TEMPLATE_HASH_LABEL,
    REVISION_ANNOTATION,
    VERSION_ANNOTATION,
)
from tests.manifests.kube import NAMESPACE, RENDERED

SCHEMA_VERSION = "1.37.0"
"""The Kubernetes version whose schema the fixtures must satisfy: the newest the pinned
kubernetes-validate knows, which is also the client's (kubernetes 37 is Kubernetes 1.37)."""
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
"""Time zero of the scripted clocks, for the API's timestamps."""


def timestamp(seconds: float) -> str:
    """An API timestamp (RFC 3339, whole seconds) `seconds` after `EPOCH`."""
    return (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@cache
def _codec() -> ApiClient:
    return ApiClient()


def validate(data: dict[str, Any]) -> None:
    """Fail unless `data` is a valid object of its kind, unknown keys included."""
    kubernetes_validate.validate(data, SCHEMA_VERSION, strict=True)


def as_model(data: dict[str, Any]) -> Any:
    """The client's model object for an API object dict, once the schema has accepted it."""
    validate(data)
    return _codec().deserialize(json.dumps(data), f"V1{data['kind']}", "application/json")


def to_dict(model: Any) -> dict[str, Any]:
    """A client model object as the API would send it."""
    data: dict[str, Any] = _codec().sanitize_for_serialization(model)
    return data


@cache
def _rendered_deployments() -> dict[str, dict[str, Any]]:
    objects = yaml.safe_load_all((RENDERED / "production.yaml").read_text())
    return {o["metadata"]["name"]: o for o in objects if o and o["kind"] == "Deployment"}


def manifest_deployment(name: str, *, replicas: int = 3) -> dict[str, Any]:
    """A Deployment of the production render, as the API server stores it once applied.

    The API's is the one without `replicas` (the HPA owns it); the server defaults it, and the
    HPA sets it, so a count is given here.
    """
    data = copy.deepcopy(_rendered_deployments()[name])
    data["metadata"]["uid"] = str(hashlib.sha256(name.encode()).hexdigest()[:32])
    data["metadata"]["generation"] = 1
    data["spec"].setdefault("replicas", replicas)
    return data


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    """One container of a Deployment's (or ReplicaSet's) pod template, by name."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = next(c for c in containers if c["name"] == name)
    return found


def pin(deployment: dict[str, Any], container_name: str, ref: str) -> dict[str, Any]:
    """The Deployment with `container_name` pinned to `ref`, as an earlier deploy left it."""
    pinned = copy.deepcopy(deployment)
    env = container(pinned, container_name).setdefault("env", [])
    env[:] = [v for v in env if v["name"] != MODEL_REF_ENV] + [
        {"name": MODEL_REF_ENV, "value": ref}
    ]
    annotations = pinned["spec"]["template"]["metadata"].setdefault("annotations", {})
    annotations[VERSION_ANNOTATION] = ref.rsplit("/", 1)[-1]
    return pinned


def with_status(
    deployment: dict[str, Any],
    *,
    generation: int = 1,
    observed: int = 1,
    replicas: int | None = None,
    updated: int | None = None,
    available: int | None = None,
    progressing: str | None = "NewReplicaSetAvailable",
    revision: int = 1,
) -> dict[str, Any]:
    """The Deployment with metadata.generation and the status a controller would write.

    Counts left out are the desired count: a finished rollout. `progressing` is the reason of
    the Progressing condition (None: no condition yet).
    """
    data = copy.deepcopy(deployment)
    desired = data["spec"].get("replicas", 1)
    data["metadata"]["generation"] = generation
    data["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = str(revision)
    status: dict[str, Any] = {
        "observedGeneration": observed,
        "replicas": desired if replicas is None else replicas,
        "updatedReplicas": desired if updated is None else updated,
        "availableReplicas": desired if available is None else available,
    }
    if progressing is not None:
        timed_out = progressing == "ProgressDeadlineExceeded"
        status["conditions"] = [
            {
                "type": "Progressing",
                "status": "False" if timed_out else "True",
                "reason": progressing,
                "message": "rollout " + ("timed out" if timed_out else "progressing"),
                "lastUpdateTime": timestamp(0),
                "lastTransitionTime": timestamp(0),
            }
        ]
    data["status"] = status
    return data


def template_hash(template: dict[str, Any]) -> str:
    """A stand-in for the controller's pod-template-hash: stable, and different per template."""
    canonical = json.dumps(template, sort_keys=True).encode()
    return hashlib.sha256(canonical).hexdigest()[:10]


def replica_set(
    deployment: dict[str, Any],
    revision: int | str,
    *,
    template: dict[str, Any] | None = None,
    owner_uid: str | None = None,
    controller: bool = True,
    replicas: int = 0,
) -> dict[str, Any]:
    """A ReplicaSet as the deployment controller makes one for a revision of `deployment`.

    Args:
        deployment: the owner.
        revision: its `deployment.kubernetes.io/revision` (a string: any value, readable or not).
        template: its pod template (default: the Deployment's current one).
        owner_uid: the owner reference's uid (default: the Deployment's).
        controller: whether the owner reference is the controller reference.
        replicas: its size.
    """
    pod_template = copy.deepcopy(template or deployment["spec"]["template"])
    pod_hash = template_hash(pod_template)
    pod_template["metadata"].setdefault("labels", {})[POD_TEMPLATE_HASH_LABEL] = pod_hash
    meta = deployment["metadata"]
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    annotations[REVISION_ANNOTATION] = str(revision)
    selector = copy.deepcopy(deployment["spec"]["selector"])
    selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH_LABEL] = pod_hash
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{meta['name']}-{pod_hash}",
            "namespace": meta.get("namespace", NAMESPACE),
            "uid": hashlib.sha256(f"{meta['name']}-{pod_hash}".encode()).hexdigest()[:32],
            "labels": dict(pod_template["metadata"]["labels"]),
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": owner_uid or meta["uid"],
                    "controller": controller,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"replicas": replicas, "selector": selector, "template": pod_template},
        "status": {"replicas": replicas, "availableReplicas": replicas},
    }
