"""The deploy flow's decisions, as tables over real API shapes: pin, judge a rollout, roll back.

Every fixture is an API object dict that kubernetes-validate accepts under the 1.37 schema
(strict), turned into the client's model objects by the client's own deserializer
(`tests/kube_objects.py`). Patches are applied with `jsonpatch`, an RFC 6902 implementation, and
the result is validated again: a patch that makes an invalid Deployment fails here.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from flows.deploy.rollout import (
    CHANGE_CAUSE_ANNOTATION,
    MODEL_REF_ENV,
    POD_TEMPLATE_HASH_LABEL,
    REVISION_ANNOTATION,
    VERSION_ANNOTATION,
    RolloutError,
    model_ref,
    pin_patch,
    pinned_ref,
    previous_revision,
    revision,
    rollback_patch,
    rollout_status,
    same_template,
)
from tests.kube_objects import (
    as_model,
    container,
    manifest_deployment,
    pin,
    replica_set,
    validate,
    with_status,
)

API, WORKER = "loanops-api", "loanops-worker"
V1, V2 = "models:/loan-default/1", "models:/loan-default/2"


def apply(patch: list[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
    """The object after the patch, which must still be a valid one."""
    patched: dict[str, Any] = jsonpatch.apply_patch(data, patch)
    validate(patched)
    return patched


# --- rollout_status: kubectl's DeploymentStatusViewer -------------------------------------------


DEADLINE = "ProgressDeadlineExceeded"
UPDATING = "ReplicaSetUpdated"
COMPLETE = "NewReplicaSetAvailable"


# Three replicas desired. Columns: metadata.generation, status.observedGeneration, replicas,
# updatedReplicas, availableReplicas, the Progressing condition's reason; then the verdict.
@pytest.mark.parametrize(
    ("generation", "observed", "replicas", "updated", "available", "progressing", "state", "says"),
    [
        (2, 1, 3, 3, 3, COMPLETE, "waiting", "spec update to be observed"),
        # The generation comes first: a deadline from the previous spec does not count.
        (2, 1, 4, 1, 3, DEADLINE, "waiting", "spec update to be observed"),
        (2, 2, 4, 1, 3, DEADLINE, "failed", '"loanops-api" exceeded its progress deadline'),
        # The deadline wins over counts that look finished.
        (2, 2, 3, 3, 3, DEADLINE, "failed", "exceeded its progress deadline"),
        (2, 2, 4, 1, 3, UPDATING, "waiting", "1 out of 3 new replicas have been updated"),
        (2, 2, 4, 3, 3, UPDATING, "waiting", "1 old replicas are pending termination"),
        (2, 2, 3, 3, 2, UPDATING, "waiting", "2 of 3 updated replicas are available"),
        (2, 2, 3, 3, 3, COMPLETE, "done", 'deployment "loanops-api" successfully rolled out'),
        # Counts decide, not the condition's reason: kubectl reads it for the deadline only.
        (2, 2, 3, 3, 3, UPDATING, "done", "successfully rolled out"),
        (2, 2, 3, 3, 3, None, "done", "successfully rolled out"),
        # The controller may be ahead of what was read.
        (2, 3, 3, 3, 3, COMPLETE, "done", "successfully rolled out"),
    ],
)
def test_rollout_status_follows_kubectl(
    generation: int,
    observed: int,
    replicas: int,
    updated: int,
    available: int,
    progressing: str | None,
    state: str,
    says: str,
) -> None:
    data = with_status(
        manifest_deployment(API),
        generation=generation,
        observed=observed,
        replicas=replicas,
        updated=updated,
        available=available,
        progressing=progressing,
    )

    verdict = rollout_status(as_model(data))

    assert verdict.state == state, verdict.message
    assert says in verdict.message


def test_without_spec_replicas_kubectl_skips_the_updated_count() -> None:
    data = manifest_deployment(API)
    del data["spec"]["replicas"]
    # The counts a controller would never write for one replica, but kubectl does not look.
    deployment = as_model(with_status(data, replicas=0, updated=0, available=0))

    assert rollout_status(deployment).done


def test_a_deployment_scaled_to_zero_is_rolled_out() -> None:
    data = manifest_deployment(WORKER)
    data["spec"]["replicas"] = 0

    assert rollout_status(as_model(with_status(data, generation=3, observed=3))).done


def test_a_deployment_no_controller_has_seen_waits() -> None:
    data = manifest_deployment(API)

    assert rollout_status(as_model(data)).state == "waiting"


# --- pin_patch ----------------------------------------------------------------------------------


def env_of(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = container(data, name).get("env", [])
    return env


@pytest.mark.parametrize(
    ("name", "container_name", "env", "ops"),
    [
        # The manifests' own: settings come from envFrom, no env list yet.
        (API, "api", None, ["test", "add", "add", "add"]),
        (WORKER, "worker", None, ["test", "add", "add", "add"]),
        (API, "api", [{"name": "OMP_NUM_THREADS", "value": "1"}],
         ["test", "add", "add", "add"]),
        (API, "api", [{"name": MODEL_REF_ENV, "value": V1}, {"name": "A", "value": "b"}],
         ["test", "test", "replace", "add", "add"]),
        (API, "api", [{"name": MODEL_REF_ENV, "valueFrom": {"configMapKeyRef": {
            "name": "loanops-config", "key": "LOANOPS_MODEL_REF"}}}],
         ["test", "test", "replace", "add", "add"]),
        # Given twice, the container sees the last: that is the one to change.
        (API, "api", [{"name": MODEL_REF_ENV, "value": V1}, {"name": MODEL_REF_ENV, "value": V1}],
         ["test", "test", "replace", "add", "add"]),
    ],
)  # fmt: skip
def test_pin_patch_pins_the_container_and_leaves_the_rest(
    name: str, container_name: str, env: list[dict[str, Any]] | None, ops: list[str]
) -> None:
    data = manifest_deployment(name)
    if env is not None:
        container(data, container_name)["env"] = env
    others = [v for v in env or [] if v["name"] != MODEL_REF_ENV]

    patch = pin_patch(as_model(data), container_name, "loan-default", "2")
    patched = apply(patch, data)

    assert [op["op"] for op in patch] == ops
    assert patch[0] == {
        "op": "test",
        "path": "/spec/template/spec/containers/0/name",
        "value": container_name,
    }
    assert pinned_ref(as_model(patched), container_name) == V2
    assert [v for v in env_of(patched, container_name) if v["name"] != MODEL_REF_ENV] == others
    assert patched["spec"]["template"]["metadata"]["annotations"][VERSION_ANNOTATION] == "2"
    assert patched["metadata"]["annotations"][CHANGE_CAUSE_ANNOTATION] == f"loanops deploy {V2}"
    # Only the pin changed: the rest of the pod template is the manifest's.
    untouched = copy.deepcopy(patched)
    container(untouched, container_name).pop("env")
    container(data, container_name).pop("env", None)
    annotations = untouched["spec"]["template"]["metadata"]["annotations"]
    annotations.pop(VERSION_ANNOTATION)
    if not annotations:  # the worker's template had none: the patch made the map
        del untouched["spec"]["template"]["metadata"]["annotations"]
    assert untouched["spec"]["template"] == data["spec"]["template"]


def test_pin_patch_is_empty_once_pinned() -> None:
    data = pin(manifest_deployment(API), "api", V2)

    assert pin_patch(as_model(data), "api", "loan-default", "2") == []


def test_a_pinned_deployment_missing_only_the_annotation_gets_it_without_a_new_env() -> None:
    data = pin(manifest_deployment(API), "api", V2)
    del data["spec"]["template"]["metadata"]["annotations"][VERSION_ANNOTATION]

    patch = pin_patch(as_model(data), "api", "loan-default", "2")

    assert [op["path"] for op in patch] == [
        "/spec/template/spec/containers/0/name",
        "/spec/template/metadata/annotations/loanops.io~1model-version",
        "/metadata/annotations/kubernetes.io~1change-cause",
    ]
    assert pinned_ref(as_model(apply(patch, data)), "api") == V2


def test_pin_patch_targets_the_named_container_among_several() -> None:
    data = manifest_deployment(API)
    sidecar = copy.deepcopy(container(data, "api"))
    sidecar["name"] = "log-shipper"
    data["spec"]["template"]["spec"]["containers"].insert(0, sidecar)

    patched = apply(pin_patch(as_model(data), "api", "loan-default", "2"), data)

    assert pinned_ref(as_model(patched), "api") == V2
    assert pinned_ref(as_model(patched), "log-shipper") is None


def test_pin_patch_refuses_a_deployment_without_the_container() -> None:
    with pytest.raises(RolloutError, match=r"no container 'model' \(it has api\)"):
        pin_patch(as_model(manifest_deployment(API)), "model", "loan-default", "2")


def test_the_guards_refuse_a_deployment_that_changed_since_the_read() -> None:
    data = manifest_deployment(API)
    container(data, "api")["env"] = [{"name": MODEL_REF_ENV, "value": V1}]
    patch = pin_patch(as_model(data), "api", "loan-default", "2")
    # Someone puts a variable in front of ours between the read and the patch.
    container(data, "api")["env"].insert(0, {"name": "OTHER", "value": "x"})

    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(data, patch)


@pytest.mark.parametrize("version", ["v2", "2a", "", "-1"])
def test_a_model_version_is_a_number(version: str) -> None:
    with pytest.raises(RolloutError, match="a model version is a number"):
        model_ref("loan-default", version)


# --- previous_revision: kubectl rollout undo's choice -------------------------------------------


def history(current: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A Deployment pinned to `current`, and templates of v1..v3 for its ReplicaSets."""
    base = manifest_deployment(API)
    templates = {
        version: pin(base, "api", f"models:/loan-default/{version}")["spec"]["template"]
        for version in ("1", "2", "3")
    }
    deployment = with_status(pin(base, "api", f"models:/loan-default/{current}"))
    return deployment, templates


@pytest.mark.parametrize(
    ("current", "revisions", "expected"),
    [
        # The controller caught up: v3 is revision 3, the newest; undo goes to revision 2.
        ("3", {"1": "1", "2": "2", "3": "3"}, "2"),
        # It has not yet made a ReplicaSet for v3: the newest revision is the one to go back to.
        ("3", {"1": "1", "2": "2"}, "2"),
        # Going back to v1 reuses its ReplicaSet; before the controller bumps its revision...
        ("1", {"1": "1", "2": "2"}, "2"),
        # ...and after, as revision 3.
        ("1", {"1": "3", "2": "2"}, "2"),
        # An unreadable revision is skipped; a missing one counts as 0.
        ("3", {"1": "one", "2": "2", "3": "3"}, "2"),
        ("3", {"1": None, "3": "3"}, "1"),
    ],
)  # fmt: skip
def test_previous_revision_is_the_newest_other_template(
    current: str, revisions: dict[str, str | None], expected: str
) -> None:
    deployment, templates = history(current)
    replica_sets = [
        replica_set(deployment, number or "0", template=templates[version])
        for version, number in revisions.items()
    ]
    for rs, number in zip(replica_sets, revisions.values(), strict=True):
        if number is None:
            del rs["metadata"]["annotations"][REVISION_ANNOTATION]

    chosen = previous_revision(as_model(deployment), [as_model(rs) for rs in replica_sets])

    assert pinned_ref(chosen, "api") == f"models:/loan-default/{expected}"


def test_only_replica_sets_the_deployment_controls_count() -> None:
    deployment, templates = history("3")
    mine = replica_set(deployment, "1", template=templates["1"])
    foreign = replica_set(deployment, "7", template=templates["2"], owner_uid="someone-else")
    not_controller = replica_set(deployment, "8", template=templates["2"], controller=False)

    chosen = previous_revision(
        as_model(deployment), [as_model(rs) for rs in (mine, foreign, not_controller)]
    )

    assert revision(chosen) == 1


def test_no_earlier_revision_means_no_rollback() -> None:
    deployment, _ = history("3")
    only = replica_set(deployment, "1")

    with pytest.raises(RolloutError, match='no rollout history found for deployment "loanops-api"'):
        previous_revision(as_model(deployment), [as_model(only)])


def test_a_paused_deployment_is_not_rolled_back() -> None:
    deployment, templates = history("3")
    deployment["spec"]["paused"] = True
    older = replica_set(deployment, "1", template=templates["1"])

    with pytest.raises(RolloutError, match="paused.*kubectl rollout resume deployment/loanops-api"):
        previous_revision(as_model(deployment), [as_model(older)])


# --- rollback_patch: kubectl rollout undo's patch -----------------------------------------------


def test_rollback_restores_the_template_without_its_hash_and_the_revision_annotations() -> None:
    deployment, templates = history("2")
    deployment["metadata"]["annotations"].update(
        {
            CHANGE_CAUSE_ANNOTATION: f"loanops deploy {V2}",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        }
    )
    older = replica_set(deployment, "1", template=templates["1"])
    older["metadata"]["annotations"][CHANGE_CAUSE_ANNOTATION] = f"loanops deploy {V1}"
    older["metadata"]["annotations"]["team"] = "risk"

    patch = rollback_patch(as_model(deployment), as_model(older))
    restored = apply(patch, deployment)

    assert [(op["op"], op["path"]) for op in patch] == [
        ("replace", "/spec/template"),
        ("add", "/metadata/annotations"),
    ]
    assert POD_TEMPLATE_HASH_LABEL not in restored["spec"]["template"]["metadata"]["labels"]
    assert restored["spec"]["template"] == templates["1"]
    assert same_template(as_model(restored).spec.template, as_model(older).spec.template)
    assert restored["metadata"]["annotations"] == {
        # Kept from the Deployment: kubectl's annotationsToSkip.
        REVISION_ANNOTATION: "1",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
        # Taken from the ReplicaSet: everything else, its revision aside.
        CHANGE_CAUSE_ANNOTATION: f"loanops deploy {V1}",
        "team": "risk",
        "checkov.io/skip1": deployment["metadata"]["annotations"]["checkov.io/skip1"],
    }
    assert pinned_ref(as_model(restored), "api") == V1


def test_rollback_to_the_running_template_sends_nothing() -> None:
    deployment, templates = history("2")
    same = replica_set(deployment, "2", template=templates["2"])

    assert rollback_patch(as_model(deployment), as_model(same)) == []


def test_rollback_works_on_a_deployment_without_annotations() -> None:
    deployment, templates = history("2")
    del deployment["metadata"]["annotations"]
    older = replica_set(deployment, "1", template=templates["1"])

    restored = apply(rollback_patch(as_model(deployment), as_model(older)), deployment)

    assert restored["spec"]["template"] == templates["1"]
