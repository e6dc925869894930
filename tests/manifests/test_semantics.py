"""What the schemas cannot see: names, selectors, quantities, references, ports and hardening.

Each check reads an overlay's render; the Job of a flow run (built from the work pool's base job
template) counts as one more workload, since its pods live in the same namespace.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from tests.manifests.flowrun import base_job_template, flow_run_job, variable_defaults
from tests.manifests.kube import (
    NAMESPACE,
    Render,
    containers,
    label_selector_matches,
    workloads,
)

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
PORT_NAME = re.compile(r"(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?")
QUANTITY = re.compile(
    r"(?P<number>[+-]?(\d+(\.\d*)?|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?"
)
BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL = {"n": "1e-9", "u": "1e-6", "m": "1e-3", "k": "1e3", "M": "1e6", "G": "1e9"}
DECIMAL |= {"T": "1e12", "P": "1e15", "E": "1e18"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
# Only these talk to the Kubernetes API, so only they carry a ServiceAccount token.
API_CLIENTS = {"prefect-worker", "loanops-flows"}
UID_FLOOR = 10000


def quantity(text: str | int) -> Decimal:
    """A Kubernetes resource quantity as a number; raises ValueError when it is not one."""
    match = QUANTITY.fullmatch(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    if suffix in BINARY:
        return number * BINARY[suffix]
    if suffix in DECIMAL:
        return number * Decimal(DECIMAL[suffix])
    if suffix:
        return number * Decimal(10) ** int(suffix[1:])
    return number


def all_workloads(rendered: Render) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The render's workloads and the flow-run Job, each with its pod template."""
    job = flow_run_job("loanops:any")
    return [*workloads(rendered.objects), (job, job["spec"]["template"])]


def where(obj: dict[str, Any], container: dict[str, Any] | None = None) -> str:
    name = f"{obj['kind']} {obj['metadata']['name']}"
    return f"{name}/{container['name']}" if container else name


# --- names ------------------------------------------------------------------------------------


def test_names_are_dns_labels(rendered: Render) -> None:
    bad = []
    for obj in rendered.objects:
        name = obj["metadata"]["name"]
        pattern = DNS1035_LABEL if obj["kind"] == "Service" else DNS1123_LABEL
        if len(name) > 63 or not pattern.fullmatch(name):
            bad.append(where(obj))
    for obj, template in all_workloads(rendered):
        spec = template["spec"]
        for container in containers(spec):
            if not DNS1123_LABEL.fullmatch(container["name"]) or len(container["name"]) > 63:
                bad.append(where(obj, container))
            for port in container.get("ports", []):
                if "name" in port and not (
                    len(port["name"]) <= 15 and PORT_NAME.fullmatch(port["name"])
                ):
                    bad.append(f"{where(obj, container)} port {port['name']}")
        for volume in spec.get("volumes", []):
            if not DNS1123_LABEL.fullmatch(volume["name"]):
                bad.append(f"{where(obj)} volume {volume['name']}")
    assert bad == []


def test_everything_is_in_the_namespace(rendered: Render) -> None:
    for obj in rendered.objects:
        if obj["kind"] in CLUSTER_SCOPED:
            continue
        assert obj["metadata"].get("namespace") == NAMESPACE, where(obj)
    assert rendered.names("Namespace") == {NAMESPACE}
    assert not rendered.of_kind("ClusterRole", "ClusterRoleBinding")


# --- selectors and the objects they find ------------------------------------------------------


def test_selectors_match_their_template_labels(rendered: Render) -> None:
    for obj, template in workloads(rendered.objects):
        labels = template["metadata"]["labels"]
        assert label_selector_matches(obj["spec"]["selector"], labels), where(obj)


def test_every_service_selects_pods_with_its_target_ports(rendered: Render) -> None:
    pods = all_workloads(rendered)
    for service in rendered.of_kind("Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        selected = [t for _, t in pods if label_selector_matches(selector, t["metadata"]["labels"])]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for template in selected:
                exposed = [p for c in template["spec"]["containers"] for p in c.get("ports", [])]
                key = "name" if isinstance(target, str) else "containerPort"
                assert any(p.get(key) == target for p in exposed), (
                    f"Service {service['metadata']['name']}: no container port {target!r}"
                )


def test_disruption_budgets_and_policies_select_pods(rendered: Render) -> None:
    labels = [t["metadata"]["labels"] for _, t in all_workloads(rendered)]
    for budget in rendered.of_kind("PodDisruptionBudget"):
        selector = budget["spec"]["selector"]
        assert any(label_selector_matches(selector, pod) for pod in labels), where(budget)
    for policy in rendered.of_kind("NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        assert any(label_selector_matches(selector, pod) for pod in labels), where(policy)
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if set(peer) == {"podSelector"}:  # a peer in this namespace
                    found = any(label_selector_matches(peer["podSelector"], pod) for pod in labels)
                    assert found, f"{where(policy)}: a peer selects no pod"


def test_every_pod_is_under_the_default_deny(rendered: Render) -> None:
    deny = rendered.get("NetworkPolicy", "default-deny-all")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny


def test_redis_and_postgres_admit_only_their_clients(rendered: Render) -> None:
    def clients(policy_name: str) -> set[str]:
        rules = rendered.get("NetworkPolicy", policy_name)["spec"]["ingress"]
        (rule,) = rules
        (peer,) = rule["from"]
        (expression,) = peer["podSelector"]["matchExpressions"]
        assert expression["key"] == "app.kubernetes.io/component"
        assert expression["operator"] == "In"
        return set(expression["values"])

    assert clients("redis") == {"api", "worker"}
    if "postgres" in rendered.names("Deployment"):
        # The workers write batch jobs' decisions to the decision log; the flow runs' tuning
        # workers share their Optuna studies in it.
        assert clients("postgres") == {"mlflow", "api", "worker", "flow"}


def test_autoscaled_deployments_leave_the_replica_count_to_the_autoscaler(
    rendered: Render,
) -> None:
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        deployment = rendered.get(target["kind"], target["name"])
        # A replica count in the manifest would reset the scale on every apply.
        assert "replicas" not in deployment["spec"], where(deployment)


def test_ingress_backends_exist(rendered: Render) -> None:
    for ingress in rendered.of_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = rendered.get("Service", backend["name"])
                names = {p.get("name") for p in service["spec"]["ports"]}
                numbers = {p["port"] for p in service["spec"]["ports"]}
                port = backend["port"]
                assert port.get("name") in names or port.get("number") in numbers


# --- references -------------------------------------------------------------------------------


def referenced(pod_spec: dict[str, Any]) -> set[tuple[str, str, str | None]]:
    """(kind, name, key) of every ConfigMap and Secret a pod spec needs; key None: the whole."""
    needed: set[tuple[str, str, str | None]] = set()
    for container in containers(pod_spec):
        for source in container.get("envFrom", []):
            for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if field in source and not source[field].get("optional"):
                    needed.add((kind, source[field]["name"], None))
        for variable in container.get("env", []):
            value_from = variable.get("valueFrom", {})
            for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if field in value_from and not value_from[field].get("optional"):
                    ref = value_from[field]
                    needed.add((kind, ref["name"], ref["key"]))
    for volume in pod_spec.get("volumes", []):
        if "configMap" in volume:
            needed.add(("ConfigMap", volume["configMap"]["name"], None))
        if "secret" in volume:
            needed.add(("Secret", volume["secret"]["secretName"], None))
    return needed


def keys_of(obj: dict[str, Any]) -> set[str]:
    return set(obj.get("data") or {}) | set(obj.get("stringData") or {})


def test_referenced_configmaps_secrets_claims_and_accounts_exist(rendered: Render) -> None:
    missing = []
    for obj, template in all_workloads(rendered):
        spec = template["spec"]
        for kind, name, key in referenced(spec):
            if name not in rendered.names(kind):
                missing.append(f"{where(obj)} needs {kind} {name}")
            elif key is not None and key not in keys_of(rendered.get(kind, name)):
                missing.append(f"{where(obj)} needs key {key} of {kind} {name}")
        for volume in spec.get("volumes", []):
            claim = volume.get("persistentVolumeClaim")
            if claim and claim["claimName"] not in rendered.names("PersistentVolumeClaim"):
                missing.append(f"{where(obj)} needs PersistentVolumeClaim {claim['claimName']}")
        account = spec.get("serviceAccountName", "default")
        if account not in rendered.names("ServiceAccount"):
            missing.append(f"{where(obj)} needs ServiceAccount {account}")
    assert missing == []


def test_ingress_secrets_exist_or_cert_manager_makes_them(rendered: Render) -> None:
    for ingress in rendered.of_kind("Ingress"):
        annotations = ingress["metadata"].get("annotations", {})
        auth = annotations.get("nginx.ingress.kubernetes.io/auth-secret")
        if auth:
            assert auth in rendered.names("Secret"), where(ingress)
        issued = "cert-manager.io/cluster-issuer" in annotations
        for tls in ingress["spec"].get("tls", []):
            # cert-manager's ingress shim creates the TLS Secret the annotation asks for.
            assert issued or tls["secretName"] in rendered.names("Secret"), where(ingress)


def test_mlflow_answers_the_names_it_is_reached_by(rendered: Render) -> None:
    # MLflow refuses a Host header it was not told about (DNS-rebinding protection).
    config = rendered.get("ConfigMap", "mlflow-config")["data"]
    allowed = set(config["MLFLOW_SERVER_ALLOWED_HOSTS"].split(","))
    tracking = rendered.get("ConfigMap", "loanops-config")["data"]["LOANOPS_TRACKING_URI"]
    assert tracking.removeprefix("http://").rstrip("/") in allowed
    assert f"mlflow.{NAMESPACE}.svc.cluster.local:5000" in allowed
    for host in [r["host"] for r in rendered.get("Ingress", "mlflow")["spec"]["rules"]]:
        assert host in allowed


# --- resources and probes ---------------------------------------------------------------------


def test_every_container_has_valid_requests_within_limits(rendered: Render) -> None:
    for obj, template in all_workloads(rendered):
        for container in containers(template["spec"]):
            resources = container.get("resources", {})
            for resource in ("cpu", "memory"):
                request = quantity(resources["requests"][resource])
                limit = quantity(resources["limits"][resource])
                assert 0 < request <= limit, f"{where(obj, container)} {resource}"
        for volume in template["spec"].get("volumes", []):
            if "emptyDir" in volume:
                assert quantity(volume["emptyDir"]["sizeLimit"]) > 0, where(obj)
    for claim in rendered.of_kind("PersistentVolumeClaim"):
        assert quantity(claim["spec"]["resources"]["requests"]["storage"]) > 0


def test_quantity_parser_refuses_what_kubernetes_refuses() -> None:
    assert quantity("250m") == Decimal("0.25")
    assert quantity("1Gi") == 2**30
    assert quantity("1e3") == 1000
    for bad in ("1GB", "1.5.0", "Mi", "1 Gi", "-"):
        with pytest.raises(ValueError):
            quantity(bad)


def test_the_resources_the_issue_sets(renders: dict[str, Render]) -> None:
    production = renders["production"]

    def resources(name: str) -> dict[str, Any]:
        spec = production.get("Deployment", name)["spec"]["template"]["spec"]
        result: dict[str, Any] = spec["containers"][0]["resources"]
        return result

    assert resources("loanops-api") == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "500m", "memory": "1Gi"},
    }
    assert resources("loanops-worker") == {
        "requests": {"cpu": "1", "memory": "768Mi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }
    assert production.get("Deployment", "loanops-worker")["spec"]["replicas"] == 2
    hpa = production.get("HorizontalPodAutoscaler", "loanops-api")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["metrics"]}
    assert targets["cpu"]["averageUtilization"] == 70
    assert targets["memory"]["averageUtilization"] == 80
    up, down = hpa["behavior"]["scaleUp"], hpa["behavior"]["scaleDown"]
    assert up["policies"] == [{"type": "Percent", "value": 100, "periodSeconds": 30}]
    assert down["stabilizationWindowSeconds"] == 300
    assert [p["value"] for p in down["policies"]] == [50]


def test_probes_use_ports_the_container_declares(rendered: Render) -> None:
    for obj, template in all_workloads(rendered):
        for container in containers(template["spec"]):
            ports = container.get("ports", [])
            for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(probe_name)
                if probe is None:
                    continue
                handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
                if handler is None:
                    assert "exec" in probe, f"{where(obj, container)} {probe_name}"
                    continue
                port = handler["port"]
                key = "name" if isinstance(port, str) else "containerPort"
                assert any(p.get(key) == port for p in ports), (
                    f"{where(obj, container)} {probe_name} uses port {port!r}, not declared"
                )


def test_long_running_containers_have_liveness_and_readiness(rendered: Render) -> None:
    for obj, template in workloads(rendered.objects):
        for container in template["spec"]["containers"]:
            assert "livenessProbe" in container, where(obj, container)
            assert "readinessProbe" in container, where(obj, container)


def test_api_probes_follow_the_serving_contract(rendered: Render) -> None:
    (api,) = rendered.get("Deployment", "loanops-api")["spec"]["template"]["spec"]["containers"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # The model takes 10–20 s to load; only readiness may wait for it.
    startup = api["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    annotations = rendered.get("Deployment", "loanops-api")["spec"]["template"]["metadata"]
    assert annotations["annotations"]["prometheus.io/path"] == "/metrics"


def test_worker_liveness_pings_the_worker(rendered: Render) -> None:
    spec = rendered.get("Deployment", "loanops-worker")["spec"]["template"]["spec"]
    (worker,) = spec["containers"]
    command = worker["livenessProbe"]["exec"]["command"]
    assert command[:3] == ["python", "-m", "serving.batch.probe"]
    ping_timeout = float(command[command.index("--timeout") + 1])
    assert worker["livenessProbe"]["timeoutSeconds"] > ping_timeout


# --- hardening --------------------------------------------------------------------------------


def test_pods_run_hardened(rendered: Render) -> None:
    for obj, template in all_workloads(rendered):
        spec = template["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where(obj)
        assert pod["runAsUser"] >= UID_FLOOR and pod["runAsGroup"] >= UID_FLOOR, where(obj)
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where(obj)
        # Service links would put MLFLOW_PORT=tcp://... into every pod: `mlflow server` reads it.
        assert spec["enableServiceLinks"] is False, where(obj)
        for container in containers(spec):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where(obj, container)
            assert context["allowPrivilegeEscalation"] is False, where(obj, container)
            assert context["capabilities"] == {"drop": ["ALL"]}, where(obj, container)
            assert context.get("privileged", False) is False, where(obj, container)
            # Writes go to volumes: /tmp at least, since Python's tempfile needs one.
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, where(obj, container)


def test_only_api_clients_get_a_service_account_token(rendered: Render) -> None:
    accounts = {a["metadata"]["name"]: a for a in rendered.of_kind("ServiceAccount")}
    for obj, template in all_workloads(rendered):
        account = template["spec"]["serviceAccountName"]
        mounted = template["spec"].get(
            "automountServiceAccountToken",
            accounts[account].get("automountServiceAccountToken", True),
        )
        assert mounted == (account in API_CLIENTS), where(obj)


def test_the_deploy_flow_may_do_only_what_it_needs(rendered: Render) -> None:
    role = rendered.get("Role", "loanops-deployer")
    rules = {
        (tuple(r["apiGroups"]), tuple(r["resources"])): sorted(r["verbs"]) for r in role["rules"]
    }
    assert rules == {
        (("apps",), ("deployments",)): ["get", "patch"],
        (("apps",), ("replicasets",)): ["list"],
    }
    binding = rendered.get("RoleBinding", "loanops-deployer")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "loanops-deployer",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "loanops-flows", "namespace": NAMESPACE}
    ]
    # The flow runs, deploy flow included, run as that account.
    assert variable_defaults(base_job_template())["service_account_name"] == "loanops-flows"
    for rule in rendered.get("Role", "prefect-worker")["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
