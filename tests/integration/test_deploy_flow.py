"""The deploy flow's I/O: the real `kubernetes` client over real HTTP, and a real MLflow registry.

Each test runs against the emulated API (`kube_cluster.py`: kmock on loopback, acting as the API
server, with a scripted deployment controller and clock) and, marked `real_cluster`, against the
cluster of LOANOPS_TEST_KUBECONFIG when one is given. No API server runs on our machines, so
here the second run is skipped; the tests say nothing about a cluster they did not reach.

The registry holds two versions: v1, the previous champion, which the Deployments pin before
each test, and v2, which holds the production alias and is the one the flow rolls out. The last
test trains a model, so it runs on the emulator only: retrain → promote → deploy.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import AppsV1Api
from mlflow import MlflowClient
from typer.testing import CliRunner

from cli.app import app
from flows.deploy.flow import DeployError, deploy_flow
from flows.deploy.rollout import (
    CHANGE_CAUSE_ANNOTATION,
    POD_TEMPLATE_HASH_LABEL,
    REVISION_ANNOTATION,
    VERSION_ANNOTATION,
    owned_by,
    pinned_ref,
    rollout_status,
)
from flows.retrain import retrain_flow
from loanops import promotion_log, registry
from loanops.settings import Settings
from tests.integration.conftest import LoanopsEnvironment
from tests.integration.kube_cluster import (
    CONTAINERS,
    FLOWS_ACCOUNT,
    NO_PATCH_ACCOUNT,
    Cluster,
    EmulatedCluster,
    deployer_rules,
    emulated_cluster,
    real_cluster,
)
from tests.kube_objects import to_dict

pytestmark = pytest.mark.integration


@pytest.fixture(params=["emulated", pytest.param("real", marks=pytest.mark.real_cluster)])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """The Kubernetes the test runs against: the emulator, or the given real cluster."""
    if request.param == "emulated":
        with emulated_cluster(tmp_path) as emulated:
            yield emulated
    else:
        with real_cluster(tmp_path) as real:
            yield real


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite tracking store for the module: each test registers a model of its own."""
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"


@pytest.fixture
def settings(
    cluster: Cluster, tracking_uri: str, tmp_path: Path, loanops_env: LoanopsEnvironment
) -> Settings:
    """The flow's environment: this cluster as the deployer, a model of the test's own."""
    env = {
        "LOANOPS_TRACKING_URI": tracking_uri,
        "LOANOPS_HOME": str(tmp_path / "home"),
        "LOANOPS_MODEL_NAME": f"loan-default-{uuid.uuid4().hex[:8]}",
        "LOANOPS_DEPLOY_TARGET": "kubernetes",
        "LOANOPS_KUBE_CONFIG": str(cluster.kubeconfig(FLOWS_ACCOUNT)),
        "LOANOPS_KUBE_NAMESPACE": cluster.namespace,
    }
    return loanops_env(env)


@pytest.fixture
def champions(settings: Settings) -> tuple[str, str]:
    """Versions 1 and 2 of the model, as after v2 passed the gate: the refs they pin."""
    client = registry.connect(settings)
    experiment = registry.ensure_experiment(client, settings.experiment_name, settings)
    client.create_registered_model(settings.model_name)
    versions = []
    for _ in range(2):
        run_id = client.create_run(experiment).info.run_id
        versions.append(
            client.create_model_version(
                settings.model_name, source=f"runs:/{run_id}/model", run_id=run_id
            )
        )
        client.set_terminated(run_id)
    registry.move_aliases(client, settings, challenger=versions[1], champion=versions[0])
    return (f"models:/{settings.model_name}/1", f"models:/{settings.model_name}/2")


def deployments(cluster: Cluster) -> dict[str, Any]:
    apps = AppsV1Api(cluster.admin)
    return {name: apps.read_namespaced_deployment(name, cluster.namespace) for name in CONTAINERS}


def aliases(settings: Settings) -> dict[str, str]:
    client = MlflowClient(settings.mlflow_uri, settings.mlflow_uri)
    return {k: str(v) for k, v in client.get_registered_model(settings.model_name).aliases.items()}


def flow_calls(cluster: Cluster) -> set[tuple[str, str]]:
    """(verb, resource) of every request the flow's identity made to the emulator."""
    assert isinstance(cluster, EmulatedCluster)
    return {
        (call.verb, call.resource)
        for call in cluster.server.calls
        if call.user.endswith(f":{FLOWS_ACCOUNT}")
    }


def test_a_healthy_rollout_pins_both_deployments_and_is_recorded(
    cluster: Cluster, settings: Settings, champions: tuple[str, str]
) -> None:
    v1, v2 = champions
    cluster.create_deployments(v1, progress_deadline_seconds=60, unhealthy=set())

    result = deploy_flow(clock=cluster.clock)

    assert result.outcome == "deployed", result.reasons
    assert (result.version, result.model_ref, result.production_version) == ("2", v2, "2")
    for name, deployment in deployments(cluster).items():
        assert pinned_ref(deployment, CONTAINERS[name]) == v2
        assert deployment.spec.template.metadata.annotations[VERSION_ANNOTATION] == "2"
        assert deployment.metadata.annotations[CHANGE_CAUSE_ANNOTATION] == f"loanops deploy {v2}"
        # A new revision, which Kubernetes keeps as the way back.
        assert deployment.metadata.annotations[REVISION_ANNOTATION] == "2"
        assert rollout_status(deployment).done
        assert "successfully rolled out" in result.rollouts[name]
    assert aliases(settings) == {"production": "2", "previous": "1"}
    (record,) = promotion_log.deploy_history(registry.connect(settings), settings)
    assert (record.outcome, record.version, record.production_version) == ("deployed", "2", "2")
    assert record.run_id == result.record_run_id
    # The gate's log still reads as gate decisions only.
    assert promotion_log.history(registry.connect(settings), settings) == []


def without_revision(annotations: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if k != REVISION_ANNOTATION}


def assert_rolled_back_to_v1(
    cluster: Cluster, settings: Settings, before: dict[str, Any], v1: str
) -> None:
    """Each Deployment runs its previous ReplicaSet's template again, and the alias followed."""
    apps = AppsV1Api(cluster.admin)
    for name, deployment in deployments(cluster).items():
        assert pinned_ref(deployment, CONTAINERS[name]) == v1
        # kubectl's undo: the previous revision's template, without its pod-template-hash.
        replica_sets = apps.list_namespaced_replica_set(cluster.namespace).items
        (previous,) = [
            rs
            for rs in replica_sets
            if owned_by(rs, deployment) and pinned_ref(rs, CONTAINERS[name]) == v1
        ]
        template = to_dict(previous.spec.template)
        del template["metadata"]["labels"][POD_TEMPLATE_HASH_LABEL]
        assert to_dict(deployment.spec.template) == template
        assert to_dict(deployment.spec.template) == to_dict(before[name].spec.template)
        # Its annotations (change cause included) are the revision's again; its number is new.
        assert without_revision(deployment.metadata.annotations) == without_revision(
            before[name].metadata.annotations
        )
    assert aliases(settings) == {"production": "1", "previous": "1"}
    client = registry.connect(settings)
    (record,) = promotion_log.deploy_history(client, settings)
    assert (record.outcome, record.version, record.previous_version) == ("rolled_back", "2", "1")
    assert record.production_version == "1"
    assert "production moved back from v2 to v1" in record.reasons
    assert client.get_model_version(settings.model_name, "2").tags["deploy.outcome"] == (
        "rolled_back"
    )
    # The way back rolls out too: the old ReplicaSets still had every pod.
    cluster.settle()
    assert all(rollout_status(d).done for d in deployments(cluster).values())


def test_a_stuck_rollout_hits_its_progress_deadline_and_rolls_back(
    cluster: Cluster, settings: Settings, champions: tuple[str, str]
) -> None:
    v1, v2 = champions
    cluster.create_deployments(v1, progress_deadline_seconds=30, unhealthy={v2})
    before = deployments(cluster)

    result = deploy_flow(clock=cluster.clock)

    assert result.outcome == "rolled_back"
    assert "exceeded its progress deadline" in result.reasons[0], result.reasons
    assert result.production_version == "1"
    assert all("rolled back to revision 1" in m for m in result.rollouts.values()), result.rollouts
    assert_rolled_back_to_v1(cluster, settings, before, v1)
    shown = CliRunner().invoke(app, ["models", "history"])
    assert shown.exit_code == 0, shown.stderr
    assert "deploy history" in shown.stdout
    assert "rolled back" in shown.stdout
    if isinstance(cluster, EmulatedCluster):
        # The flow needs every grant of its Role, and nothing the Role does not grant.
        granted = {
            (verb, f"{resource}.{group}")
            for rule in deployer_rules()
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
        assert flow_calls(cluster) == granted


def test_a_rollout_that_outlasts_the_timeout_rolls_back(
    cluster: Cluster,
    settings: Settings,
    champions: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v1, v2 = champions
    # Pods that never get ready, and a deadline far past the flow's patience.
    cluster.create_deployments(v1, progress_deadline_seconds=600, unhealthy={v2})
    monkeypatch.setenv("LOANOPS_ROLLOUT_TIMEOUT_SECONDS", "30")
    before = deployments(cluster)

    result = deploy_flow(clock=cluster.clock)

    assert result.outcome == "rolled_back"
    assert "did not finish within 30 s" in result.reasons[0], result.reasons
    assert_rolled_back_to_v1(cluster, settings, before, v1)


def test_a_role_without_patch_is_refused_in_one_clear_line_and_nothing_changes(
    cluster: Cluster,
    settings: Settings,
    champions: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v1, _ = champions
    cluster.create_deployments(v1, progress_deadline_seconds=60, unhealthy=set())
    monkeypatch.setenv("LOANOPS_KUBE_CONFIG", str(cluster.kubeconfig(NO_PATCH_ACCOUNT)))
    before = {name: to_dict(d) for name, d in deployments(cluster).items()}

    with pytest.raises(DeployError) as raised:
        deploy_flow(clock=cluster.clock)

    message = str(raised.value)
    assert message.startswith(
        "forbidden: the deploy flow may not patch deployments.apps in namespace "
        f"{cluster.namespace}: grant it in Role loanops-deployer (manifests/base/rbac.yaml: "
        "apiGroups [apps], resources [deployments], verbs [patch]), bound to ServiceAccount "
        "loanops-flows. The API server said: "
    ), message
    assert 'cannot patch resource "deployments" in API group "apps"' in message
    assert "\n" not in message
    after = {name: to_dict(d) for name, d in deployments(cluster).items()}
    assert after == before
    assert aliases(settings) == {"production": "2", "previous": "1"}
    assert promotion_log.deploy_history(registry.connect(settings), settings) == []


def test_a_dry_run_returns_the_patches_and_sends_none(
    cluster: Cluster, settings: Settings, champions: tuple[str, str]
) -> None:
    v1, v2 = champions
    cluster.create_deployments(v1, progress_deadline_seconds=60, unhealthy=set())
    before = {name: to_dict(d) for name, d in deployments(cluster).items()}

    result = deploy_flow(dry_run=True, clock=cluster.clock)

    assert result.outcome == "dry_run"
    assert set(result.patches) == set(CONTAINERS)
    for patch in result.patches.values():
        # The pin replaces v1's entry in place, behind a `test` of its index.
        assert [op["op"] for op in patch][:3] == ["test", "test", "replace"]
        assert {"name": "LOANOPS_MODEL_REF", "value": v2} in [op.get("value") for op in patch]
    assert {name: to_dict(d) for name, d in deployments(cluster).items()} == before
    if isinstance(cluster, EmulatedCluster):
        assert flow_calls(cluster) == {("get", "deployments.apps")}


def test_loanops_deploy_dry_run_prints_the_json_patches(
    cluster: Cluster, settings: Settings, champions: tuple[str, str]
) -> None:
    v1, v2 = champions
    cluster.create_deployments(v1, progress_deadline_seconds=60, unhealthy=set())
    planned = deploy_flow(dry_run=True).patches

    result = CliRunner().invoke(app, ["deploy", "--dry-run"])

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == planned
    assert f"{v2}: the application/json-patch+json patch per Deployment" in result.stderr
    assert all(pinned_ref(d, CONTAINERS[n]) == v1 for n, d in deployments(cluster).items())


def test_a_version_that_is_not_production_is_refused_before_the_cluster_is_touched(
    cluster: Cluster, settings: Settings, champions: tuple[str, str]
) -> None:
    v1, _ = champions
    cluster.create_deployments(v1, progress_deadline_seconds=60, unhealthy=set())

    with pytest.raises(DeployError, match=r"v1 is not production \(v2 is\).*promote v1 first"):
        deploy_flow(version="1", clock=cluster.clock)

    assert all(pinned_ref(d, CONTAINERS[n]) == v1 for n, d in deployments(cluster).items())
    if isinstance(cluster, EmulatedCluster):
        assert flow_calls(cluster) == set()


def test_retrain_deploys_what_it_promotes_when_a_cluster_is_configured(
    tmp_path: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with emulated_cluster(tmp_path) as cluster:
        env = {
            "LOANOPS_TRACKING_URI": tracking_uri,
            "LOANOPS_HOME": str(tmp_path / "home"),
            "LOANOPS_MODEL_NAME": f"loan-default-{uuid.uuid4().hex[:8]}",
            "LOANOPS_DEPLOY_TARGET": "kubernetes",
            "LOANOPS_KUBE_CONFIG": str(cluster.kubeconfig(FLOWS_ACCOUNT)),
            # The smallest training that still passes the gate.
            "LOANOPS_DATASET": "synthetic",
            "LOANOPS_DATASET_ROWS": "3000",
            "LOANOPS_TUNE_TRIALS": "1",
            "LOANOPS_CV_FOLDS": "2",
            "LOANOPS_MODEL_FAMILIES": '["logreg"]',
            "LOANOPS_BOOTSTRAP_SAMPLES": "100",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        # As the manifests ship them: no pin yet, the pods follow the production alias.
        cluster.create_deployments(None, progress_deadline_seconds=60, unhealthy=set())

        # retrain passes no clock: the controller runs on the real one, beside the flow.
        with cluster.controller_in_background():
            result = retrain_flow()

        assert result.promotion.outcome == "promoted", result.promotion.reasons
        assert result.deployment is not None
        assert result.deployment.outcome == "deployed", result.deployment.reasons
        ref = f"models:/{env['LOANOPS_MODEL_NAME']}/{result.training.version}"
        assert result.deployment.model_ref == ref
        for name, deployment in deployments(cluster).items():
            assert pinned_ref(deployment, CONTAINERS[name]) == ref
            assert rollout_status(deployment).done
