"""Rollouts of a model version on Kubernetes: what to patch, how far a rollout got, what to undo.

Pure functions over the `kubernetes` client's model objects (`V1Deployment`, `V1ReplicaSet`);
the deploy flow beside it (`flow.py`, through `kube.py`) does the I/O. A version is pinned by
setting `LOANOPS_MODEL_REF=models:/NAME/VERSION` on a Deployment's pod template, so each
ReplicaSet serves one model version and Kubernetes' revision history is the model's rollback
history.

The rules are kubectl's: `rollout_status` is its DeploymentStatusViewer, and `previous_revision`
and `rollback_patch` are what `kubectl rollout undo` does. Every patch is a JSON patch (RFC 6902),
which the API server, and the emulator the tests use, apply exactly; a strategic merge patch
would need the server's knowledge of which lists merge by key. Pointers are built and read with
`jsonpointer`, and every patch is checked by `jsonpatch` before it leaves this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import jsonpatch
from jsonpointer import JsonPointer, resolve_pointer
from kubernetes.client import (
    ApiClient,
    V1Deployment,
    V1ObjectMeta,
    V1PodSpec,
    V1PodTemplateSpec,
    V1ReplicaSet,
)

from loanops.model_ref import ModelRef

MODEL_REF_ENV = "LOANOPS_MODEL_REF"
VERSION_ANNOTATION = "loanops.io/model-version"
"""On the pod template: the version each ReplicaSet, and each of its pods, serves."""
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
"""On the Deployment: the controller copies it to the new ReplicaSet, and `kubectl rollout
history` shows it as CHANGE-CAUSE."""
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"

# Annotations kubectl's rollback keeps from the Deployment instead of taking them from the
# ReplicaSet (kubectl/pkg/polymorphichelpers/rollback.go, annotationsToSkip).
ANNOTATIONS_KEPT_ON_ROLLBACK = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION_ANNOTATION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)

JsonPatch = list[dict[str, Any]]


class RolloutError(RuntimeError):
    """A Deployment cannot be pinned or rolled back as asked; the message says why."""


@dataclass(frozen=True)
class RolloutStatus:
    """How far a Deployment's rollout got, in kubectl's words."""

    state: Literal["waiting", "done", "failed"]
    message: str

    @property
    def done(self) -> bool:
        return self.state == "done"

    @property
    def failed(self) -> bool:
        return self.state == "failed"


def model_ref(model_name: str, version: str) -> str:
    """The registry URI that pins one version: `models:/NAME/VERSION`."""
    try:
        return str(ModelRef.pinned(model_name, version))
    except ValueError as error:
        raise RolloutError(f"a model version is a number, not {version!r}") from error


@cache
def _codec() -> ApiClient:
    # Only its (de)serializer is used: building an ApiClient opens no connection.
    return ApiClient()


def to_json(obj: Any) -> Any:
    """A client model object as the API sends it: camelCase keys, no unset fields."""
    return _codec().sanitize_for_serialization(obj)


def _pointer(*parts: str | int) -> str:
    """A JSON pointer (RFC 6901); `/` and `~` in a key are escaped, as in annotation names."""
    return str(JsonPointer.from_parts(parts).path)


def _checked(ops: JsonPatch) -> JsonPatch:
    """`ops`, once `jsonpatch` agrees that they form a JSON patch document."""
    try:
        jsonpatch.JsonPatch(ops)
    except (jsonpatch.InvalidJsonPatch, jsonpatch.JsonPointerException) as error:
        raise RolloutError(f"built an invalid JSON patch ({error}): {ops}") from error
    return ops


def _metadata(obj: V1Deployment | V1ReplicaSet) -> V1ObjectMeta:
    if obj.metadata is None:
        raise RolloutError(f"a {type(obj).__name__} without metadata is not one the API returned")
    return obj.metadata


def _name(obj: V1Deployment | V1ReplicaSet) -> str:
    return str(_metadata(obj).name)


def _template(obj: V1Deployment | V1ReplicaSet) -> V1PodTemplateSpec:
    if obj.spec is None or obj.spec.template is None:
        raise RolloutError(f"{type(obj).__name__} {_name(obj)} has no pod template")
    return obj.spec.template


def _pod_spec(obj: V1Deployment | V1ReplicaSet) -> V1PodSpec:
    spec = _template(obj).spec
    if spec is None:
        raise RolloutError(f"{type(obj).__name__} {_name(obj)} has no pod spec")
    return spec


def _set_map_entry(document: Any, path: tuple[str, ...], key: str, value: str) -> JsonPatch:
    """Ops that make `path[key] == value`; `add` replaces a member that exists (RFC 6902 4.1)."""
    current = resolve_pointer(document, _pointer(*path), None)
    if current is not None and current.get(key) == value:
        return []
    if current is None:
        return [{"op": "add", "path": _pointer(*path), "value": {key: value}}]
    return [{"op": "add", "path": _pointer(*path, key), "value": value}]


def pin_patch(deployment: V1Deployment, container: str, model_name: str, version: str) -> JsonPatch:
    """The JSON patch that pins `container` of a Deployment to one model version.

    It sets `LOANOPS_MODEL_REF` on the container, the version annotation on the pod template,
    and the change cause on the Deployment. `test` ops guard the list indexes it writes to, so
    a Deployment edited between the read and the patch makes the API refuse the patch (422)
    rather than pin the wrong entry.

    Args:
        deployment: the Deployment as read from the API.
        container: the name of the container that loads the model.
        model_name: the registered model's name.
        version: the version to pin.

    Returns:
        The ops; empty when the Deployment already pins this version.

    Raises:
        RolloutError: the pod template has no such container.
    """
    ref = model_ref(model_name, version)
    containers = _pod_spec(deployment).containers
    index = next((i for i, c in enumerate(containers) if c.name == container), None)
    if index is None:
        names = ", ".join(c.name for c in containers)
        raise RolloutError(
            f"Deployment {_name(deployment)} has no container {container!r} (it has {names}); "
            "set LOANOPS_KUBE_DEPLOYMENTS to the container that loads the model"
        )
    base = ("spec", "template", "spec", "containers", index)
    env = containers[index].env
    entry = {"name": MODEL_REF_ENV, "value": ref}
    # With a name given twice, the container sees the last one.
    pinned = [i for i, var in enumerate(env or []) if var.name == MODEL_REF_ENV]
    env_ops: JsonPatch = []
    if not env:
        env_ops = [{"op": "add", "path": _pointer(*base, "env"), "value": [entry]}]
    elif not pinned:
        env_ops = [{"op": "add", "path": _pointer(*base, "env", "-"), "value": entry}]
    elif env[pinned[-1]].value != ref or env[pinned[-1]].value_from is not None:
        at = (*base, "env", pinned[-1])
        env_ops = [
            {"op": "test", "path": _pointer(*at, "name"), "value": MODEL_REF_ENV},
            {"op": "replace", "path": _pointer(*at), "value": entry},
        ]
    # The API's own form of the object: the pointers below read it and then write to it.
    document = to_json(deployment)
    # A Deployment's template always has metadata: its labels must match the selector.
    annotation_ops = _set_map_entry(
        document, ("spec", "template", "metadata", "annotations"), VERSION_ANNOTATION, version
    )
    if not env_ops and not annotation_ops:
        return []
    cause_ops = _set_map_entry(
        document, ("metadata", "annotations"), CHANGE_CAUSE_ANNOTATION, f"loanops deploy {ref}"
    )
    guard = {"op": "test", "path": _pointer(*base, "name"), "value": container}
    return _checked([guard, *env_ops, *annotation_ops, *cause_ops])


def pinned_ref(obj: V1Deployment | V1ReplicaSet, container: str) -> str | None:
    """The model reference a Deployment's (or ReplicaSet's) container is pinned to, if any."""
    for candidate in _pod_spec(obj).containers:
        if candidate.name == container:
            values = [v.value for v in candidate.env or [] if v.name == MODEL_REF_ENV]
            return values[-1] if values else None
    return None


def _condition(deployment: V1Deployment, kind: str) -> Any:
    for condition in (deployment.status.conditions if deployment.status else None) or []:
        if condition.type == kind:
            return condition
    return None


def rollout_status(deployment: V1Deployment) -> RolloutStatus:
    """kubectl's `rollout status` verdict on a Deployment (DeploymentStatusViewer.Status).

    Until the controller has observed the latest spec, the rollout is waiting. Then, in order: a
    Progressing condition with reason ProgressDeadlineExceeded fails it; fewer updated replicas
    than desired, old replicas still running, or updated replicas not yet available keep it
    waiting; otherwise it is done.
    """
    name = _name(deployment)
    status = deployment.status
    generation = _metadata(deployment).generation or 0
    observed = (status.observed_generation if status else None) or 0
    if generation > observed:
        return RolloutStatus("waiting", "Waiting for deployment spec update to be observed...")
    condition = _condition(deployment, "Progressing")
    if condition is not None and condition.reason == PROGRESS_DEADLINE_EXCEEDED:
        return RolloutStatus("failed", f'deployment "{name}" exceeded its progress deadline')
    desired = deployment.spec.replicas if deployment.spec else None
    updated = (status.updated_replicas if status else None) or 0
    replicas = (status.replicas if status else None) or 0
    available = (status.available_replicas if status else None) or 0
    # kubectl skips this check when spec.replicas is unset (the API server defaults it to 1).
    if desired is not None and updated < desired:
        return RolloutStatus(
            "waiting",
            f'Waiting for deployment "{name}" rollout to finish: {updated} out of {desired} new '
            "replicas have been updated...",
        )
    if replicas > updated:
        return RolloutStatus(
            "waiting",
            f'Waiting for deployment "{name}" rollout to finish: {replicas - updated} old '
            "replicas are pending termination...",
        )
    if available < updated:
        return RolloutStatus(
            "waiting",
            f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} '
            "updated replicas are available...",
        )
    return RolloutStatus("done", f'deployment "{name}" successfully rolled out')


def revision(obj: V1Deployment | V1ReplicaSet) -> int | None:
    """The `deployment.kubernetes.io/revision` number; 0 when absent, None when unreadable."""
    value = (_metadata(obj).annotations or {}).get(REVISION_ANNOTATION)
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return None


def _template_without_hash(template: V1PodTemplateSpec) -> dict[str, Any]:
    data: dict[str, Any] = to_json(template) or {}
    labels = (data.get("metadata") or {}).get("labels")
    if labels is not None:
        labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    return data


def same_template(first: V1PodTemplateSpec, second: V1PodTemplateSpec) -> bool:
    """Whether two pod templates are equal but for `pod-template-hash`, as kubectl compares them."""
    return _template_without_hash(first) == _template_without_hash(second)


def owned_by(replica_set: V1ReplicaSet, deployment: V1Deployment) -> bool:
    """Whether the Deployment is the ReplicaSet's controller (its controller ownerReference)."""
    uid = _metadata(deployment).uid
    return any(
        ref.controller and ref.kind == "Deployment" and ref.uid == uid
        for ref in _metadata(replica_set).owner_references or []
    )


def previous_revision(deployment: V1Deployment, replica_sets: list[V1ReplicaSet]) -> V1ReplicaSet:
    """The ReplicaSet `kubectl rollout undo` returns to: the newest revision before the current.

    Only ReplicaSets the Deployment controls count, and unreadable revisions are skipped, as in
    kubectl. kubectl takes the second-newest revision, which assumes the controller has already
    made a ReplicaSet for the current template; this takes the newest revision whose template
    is not the current one. Both agree once the controller has caught up, and this one is still
    right when a rollout is undone before the controller saw it.

    Raises:
        RolloutError: no earlier revision exists, or the Deployment is paused.
    """
    if deployment.spec is not None and deployment.spec.paused:
        raise RolloutError(
            f"Deployment {_name(deployment)} is paused and cannot be rolled back; resume it "
            f"first with `kubectl rollout resume deployment/{_name(deployment)}`"
        )
    candidates = [
        (number, replica_set)
        for replica_set in replica_sets
        if owned_by(replica_set, deployment)
        and not same_template(_template(replica_set), _template(deployment))
        and (number := revision(replica_set)) is not None
    ]
    if not candidates:
        raise RolloutError(f'no rollout history found for deployment "{_name(deployment)}"')
    return max(candidates, key=lambda pair: pair[0])[1]


def rollback_patch(deployment: V1Deployment, replica_set: V1ReplicaSet) -> JsonPatch:
    """The JSON patch `kubectl rollout undo` sends to restore a ReplicaSet's template.

    The template comes back without its `pod-template-hash` label; the Deployment's annotations
    become the ReplicaSet's, but for those kubectl keeps from the Deployment (its revision,
    last-applied configuration and replica counts). One difference: annotations are written with
    `add`, which also works on a Deployment that has none, where kubectl's `replace` would fail.

    Returns:
        The ops; empty when the Deployment already runs that template.
    """
    if same_template(_template(replica_set), _template(deployment)):
        return []
    template = _template_without_hash(_template(replica_set))
    current = _metadata(deployment).annotations or {}
    annotations = {k: v for k, v in current.items() if k in ANNOTATIONS_KEPT_ON_ROLLBACK}
    for key, value in (_metadata(replica_set).annotations or {}).items():
        if key not in ANNOTATIONS_KEPT_ON_ROLLBACK:
            annotations[key] = value
    return _checked(
        [
            {"op": "replace", "path": _pointer("spec", "template"), "value": template},
            {"op": "add", "path": _pointer("metadata", "annotations"), "value": annotations},
        ]
    )
