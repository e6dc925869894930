"""Kubernetes for the deploy flow's I/O tests: an emulated API on loopback, or a real cluster.

No Kubernetes API server can run on our machines, so by default the tests talk, through the real
`kubernetes` client over real HTTP, to kmock's in-memory API emulator, made to do what an API
server does in the ways the deploy flow relies on:

- authorization: a bearer token of `identities` maps to RBAC rules, and a request they do not
  allow gets a 403 Status in the API server's words, before anything changes (kmock alone
  applies a write even when a reaction answers it with an error); any other token is the tests'
  own, allowed everything;
- `metadata.uid` and `generation` on create, and `generation` + 1 on a spec change (the
  rollout-status rules hinge on it; kmock keeps neither);
- a JSON patch whose `test` op fails gets 422, as from the API server (kmock answers 500).

Patches are applied by kmock itself: JSON patches by the `jsonpatch` library (RFC 6902, exact),
objects as merge patches; it ignores the Content-Type, so a strategic merge patch would be
applied as a merge patch, which is why the flow sends JSON patches only.

No deployment controller runs either: `ScriptedController` does what the deployment controller
does with ReplicaSets, revisions and status, one step per tick of an injected `ScriptedClock`,
through the same API. Its pods are healthy unless the model they pin is in `unhealthy`.

With `LOANOPS_TEST_KUBECONFIG` set, `RealCluster` gives the same tests a real cluster instead:
a throwaway namespace, busybox Deployments whose readiness fails for an unhealthy model, the
manifests' Role for the flow's ServiceAccount, and the real clock and controller.
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import jsonpatch
import jsonpointer
import kmock
import yaml
from kubernetes import config as kube_config
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    AuthenticationV1TokenRequest,
    Configuration,
    CoreV1Api,
    RbacAuthorizationV1Api,
    V1TokenRequestSpec,
)

from flows.deploy.rollout import MODEL_REF_ENV, REVISION_ANNOTATION, rollout_status
from tests.kube_objects import (
    as_model,
    manifest_deployment,
    pin,
    replica_set,
    timestamp,
    to_dict,
)
from tests.manifests.kube import BASE, NAMESPACE
from tests.waiting import wait_for

T = TypeVar("T")

ADMIN_TOKEN = "cluster-admin"
"""The tests' own identity (setup, assertions, the scripted controller): allowed everything."""
DEPLOYER_ROLE = "loanops-deployer"
FLOWS_ACCOUNT = "loanops-flows"
NO_PATCH_ACCOUNT = "loanops-flows-without-patch"
CONTAINERS = {"loanops-api": "api", "loanops-worker": "worker"}
"""The Deployments the flow pins by default (`Settings.kube_deployments`), with their containers."""


def deployer_rules(*, without: str | None = None) -> list[dict[str, Any]]:
    """The rules of Role loanops-deployer in manifests/base/rbac.yaml, less one verb if asked."""
    for document in yaml.safe_load_all((BASE / "rbac.yaml").read_text()):
        if document["kind"] == "Role" and document["metadata"]["name"] == DEPLOYER_ROLE:
            rules = copy.deepcopy(document["rules"])
            for rule in rules:
                rule["verbs"] = [verb for verb in rule["verbs"] if verb != without]
            return [rule for rule in rules if rule["verbs"]]
    raise AssertionError(f"no Role {DEPLOYER_ROLE} in {BASE / 'rbac.yaml'}")


def allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str) -> bool:
    """RBAC: whether any rule grants the verb on the resource (resourceNames honoured)."""
    return any(
        group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", [])
        for rule in rules
        if (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
        and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
        and (not rule.get("resourceNames") or name in rule["resourceNames"])
    )


@dataclass(frozen=True)
class Identity:
    """Who a bearer token is, and what RBAC lets them do."""

    user: str
    rules: list[dict[str, Any]]


@dataclass(frozen=True)
class Call:
    """One request as the authorizer saw it."""

    user: str
    verb: str
    resource: str
    name: str | None


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with the API server's authorization, generations and 422s (see above)."""

    identities: dict[str, Identity]
    calls: list[Call]

    def authorize(self, request: kmock.Request) -> None:
        """Raise the API server's 403 unless the token's rules allow the request."""
        headers = {key.lower(): value for key, value in dict(request.headers).items()}
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        resource = request.resource
        assert resource is not None and resource.plural is not None  # only Kubernetes requests
        plural = resource.plural + (f"/{request.subresource}" if request.subresource else "")
        group = resource.group or ""
        method = str(request.method.value)
        if method == "GET":
            verb = (
                "watch"
                if request.params.get("watch") == "true"
                else ("get" if request.name else "list")
            )
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
        identity = self.identities.get(token)
        user = identity.user if identity else ADMIN_TOKEN
        self.calls.append(Call(user, verb, f"{plural}.{group}" if group else plural, request.name))
        if identity is None or allows(identity.rules, group, plural, verb, request.name or ""):
            return
        target = f"{plural}.{group}" if group else plural
        subject = f'{target} "{request.name}"' if request.name else target
        raise kmock.KubernetesError(
            status=403,
            reason="Forbidden",
            message=(
                f'{subject} is forbidden: User "{user}" cannot {verb} resource "{plural}" in API '
                f'group "{group}" in the namespace "{request.namespace}"'
            ),
            details={"name": request.name or "", "group": group, "kind": plural},
        )

    def check_json_patch(self, request: kmock.Request) -> None:
        """Answer 422, as the API server does, when a JSON patch cannot apply (a failed `test`)."""
        key: Any = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return  # kmock's own 404
        try:
            jsonpatch.apply_patch(self.objects[key].raw, request.data)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
            raise kmock.KubernetesError(
                status=422, reason="Invalid", message=str(error), details={}
            ) from error

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None:
            self.authorize(request)
            if request.action == kmock.action.UPDATE and isinstance(request.data, list):
                self.check_json_patch(request)
        return await super()._handle(request)

    async def _serve_create(self, request: kmock.Request) -> Any:
        # Runs after kmock stored the object and before it renders the reply: the server's fields.
        metadata = request.data.get("metadata", {})
        namespace = request.namespace or metadata.get("namespace")
        async with self._lock:
            key: Any = (request.resource, namespace, metadata.get("name"))
            stored = self.objects[key]
            meta = copy.deepcopy(stored.raw["metadata"])
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), generation=1)
            stored["metadata"] = meta
        return await super()._serve_create(request)

    async def _serve_update(self, request: kmock.Request) -> Any:
        async with self._lock:
            key: Any = (request.resource, request.namespace, request.name)
            stored = self.objects[key]
            versions = [v for v in stored.history if v is not None]
            before = versions[-2].raw.get("spec") if len(versions) > 1 else None
            if request.subresource is None and before != stored.raw.get("spec"):
                meta = copy.deepcopy(stored.raw["metadata"])
                meta["generation"] = int(meta.get("generation", 1)) + 1
                stored["metadata"] = meta
        return await super()._serve_update(request)


class _Loop:
    """An asyncio loop in a thread of its own, for a server the synchronous client can reach."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kube-api", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@contextmanager
def emulated_api(identities: dict[str, Identity]) -> Iterator[tuple[ApiServer, str]]:
    """The emulator, listening on a free loopback port; yields it and its URL."""
    loop = _Loop()
    server = ApiServer()
    server.identities = identities
    server.calls = []
    # Declared, so that listing them works before the first one exists.
    server.resources["apps/v1/deployments"] = kmock.ResourceInfo()
    server.resources["apps/v1/replicasets"] = kmock.ResourceInfo()
    listener = kmock.Server(server, host="127.0.0.1")

    async def start() -> None:
        await server.__aenter__()
        await listener.__aenter__()

    async def stop() -> None:
        await listener.__aexit__(None, None, None)
        await server.__aexit__(None, None, None)

    loop.run(start())
    try:
        yield server, f"http://127.0.0.1:{listener.port}"
    finally:
        loop.run(stop())
        loop.close()


def client_for(host: str, token: str) -> ApiClient:
    configuration = Configuration(host=host)
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return ApiClient(configuration)


def write_kubeconfig(
    path: Path, host: str, token: str, ca_file: str | None = None, *, verify: bool = True
) -> Path:
    """A kubeconfig with one cluster, one token user and one context, as kubectl writes them."""
    cluster: dict[str, Any] = {"server": host}
    if ca_file:
        cluster["certificate-authority"] = ca_file
    if not verify:
        cluster["insecure-skip-tls-verify"] = True
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": cluster}],
                "users": [{"name": "flow", "user": {"token": token}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "flow"}}],
                "current-context": "test",
            }
        )
    )
    return path


# --- the scripted deployment controller ---------------------------------------------------------


@dataclass
class ScriptedController:
    """The deployment controller's part in a rollout, one step per call, through the API.

    Per step and Deployment: observe a new spec (make the ReplicaSet of the new template with
    the next revision, or bring back an old one as kubectl's undo makes it do), move one pod
    (surge one new, then retire one old, as with maxSurge 1 and maxUnavailable 0), write the
    status, and mark the rollout ProgressDeadlineExceeded once it has made no progress for
    progressDeadlineSeconds. New pods of an unhealthy model never become available.
    """

    client: ApiClient
    namespace: str
    unhealthy: set[str] = field(default_factory=set)
    last_progress: dict[str, float] = field(default_factory=dict)

    def step(self, now: float) -> None:
        apps = AppsV1Api(self.client)
        replica_sets = [
            to_dict(rs) for rs in apps.list_namespaced_replica_set(self.namespace).items
        ]
        for deployment in apps.list_namespaced_deployment(self.namespace).items:
            self.reconcile(to_dict(deployment), replica_sets, now)

    def settle(self, now: float = 0.0, steps: int = 20) -> None:
        """Step until every rollout is over, one way or the other."""
        apps = AppsV1Api(self.client)
        for _ in range(steps):
            self.step(now)
            deployments = apps.list_namespaced_deployment(self.namespace).items
            if all(rollout_status(d).state != "waiting" for d in deployments):
                return
        raise AssertionError(f"the rollouts did not settle in {steps} steps")

    def reconcile(
        self, deployment: dict[str, Any], replica_sets: list[dict[str, Any]], now: float
    ) -> None:
        apps = AppsV1Api(self.client)
        meta, spec = deployment["metadata"], deployment["spec"]
        name = meta["name"]
        owned = [rs for rs in replica_sets if _controlled_by(rs, meta["uid"])]
        newest = max((_revision(rs) for rs in owned), default=0)
        new = next(
            (rs for rs in owned if _without_hash(rs["spec"]["template"]) == spec["template"]), None
        )
        progressed = False
        if new is None:
            new = replica_set(deployment, str(newest + 1))
            new["metadata"].pop("uid")
            new["spec"]["replicas"] = 0
            new["status"] = {"replicas": 0, "availableReplicas": 0}
            apps.create_namespaced_replica_set(self.namespace, as_model(new))
            owned.append(new)
            progressed = True
        elif _revision(new) < newest:
            # An old template is back (a rollback): its ReplicaSet becomes the newest revision.
            annotations = {**(meta.get("annotations") or {}), REVISION_ANNOTATION: str(newest + 1)}
            new["metadata"]["annotations"] = annotations
            self._merge(
                apps.patch_namespaced_replica_set,
                new["metadata"]["name"],
                {"metadata": {"annotations": annotations}},
            )
            progressed = True
        olds = [rs for rs in owned if rs is not new]

        desired = spec.get("replicas", 1)
        healthy = pinned_ref_of(spec["template"]) not in self.unhealthy
        sizes = {rs["metadata"]["name"]: rs["spec"].get("replicas", 0) for rs in owned}
        new_count = sizes[new["metadata"]["name"]]
        old_count = sum(sizes.values()) - new_count
        # maxSurge 1: one pod over the desired count at most; an unhealthy template gets one.
        if new_count < desired and new_count + old_count <= desired and (healthy or not new_count):
            new_count += 1
            sizes[new["metadata"]["name"]] = new_count
            progressed = True
        # maxUnavailable 0: an old pod goes only once a new one is available.
        elif healthy and old_count > 0:
            shrinking = next(rs for rs in olds if sizes[rs["metadata"]["name"]] > 0)
            sizes[shrinking["metadata"]["name"]] -= 1
            old_count -= 1
            progressed = True
        new_available = new_count if healthy else 0
        for rs in owned:
            size = sizes[rs["metadata"]["name"]]
            self._scale(apps, rs, size, new_available if rs is new else size)

        if progressed or name not in self.last_progress:
            self.last_progress[name] = now
        since = timestamp(self.last_progress[name])
        available = new_available + old_count
        complete = new_count == desired and old_count == 0 and new_available == desired
        progressing = {c["type"]: c for c in (deployment.get("status") or {}).get("conditions", [])}
        timed_out = progressing.get("Progressing", {}).get("reason") == "ProgressDeadlineExceeded"
        if complete:
            reason, state, words = "NewReplicaSetAvailable", "True", "has successfully progressed"
        elif (timed_out and not progressed) or now - self.last_progress[name] > spec.get(
            "progressDeadlineSeconds", 600
        ):
            reason, state, words = "ProgressDeadlineExceeded", "False", "has timed out progressing"
        else:
            reason, state, words = "ReplicaSetUpdated", "True", "is progressing"
        enough = available >= desired
        status = {
            "observedGeneration": meta["generation"],
            "replicas": new_count + old_count,
            "updatedReplicas": new_count,
            "readyReplicas": available,
            "availableReplicas": available,
            "unavailableReplicas": max(desired - available, 0),
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if enough else "False",
                    "reason": f"MinimumReplicas{'Available' if enough else 'Unavailable'}",
                    "message": f"Deployment {'has' if enough else 'does not have'} minimum "
                    "availability.",
                    "lastUpdateTime": since,
                    "lastTransitionTime": since,
                },
                {
                    "type": "Progressing",
                    "status": state,
                    "reason": reason,
                    "message": f'ReplicaSet "{new["metadata"]["name"]}" {words}.',
                    "lastUpdateTime": since,
                    "lastTransitionTime": since,
                },
            ],
        }
        revision = str(_revision(new))
        if (meta.get("annotations") or {}).get(REVISION_ANNOTATION) != revision:
            self._merge(
                apps.patch_namespaced_deployment,
                name,
                {"metadata": {"annotations": {REVISION_ANNOTATION: revision}}},
            )
        if not _holds(deployment.get("status") or {}, status):
            self._merge(apps.patch_namespaced_deployment_status, name, {"status": status})

    def _scale(self, apps: AppsV1Api, rs: dict[str, Any], size: int, available: int) -> None:
        """Set a ReplicaSet's size and pod counts, writing only what changed."""
        name = rs["metadata"]["name"]
        if rs["spec"].get("replicas", 0) != size:
            self._merge(apps.patch_namespaced_replica_set, name, {"spec": {"replicas": size}})
        status = {"replicas": size, "readyReplicas": available, "availableReplicas": available}
        if not _holds(rs.get("status") or {}, status):
            self._merge(apps.patch_namespaced_replica_set_status, name, {"status": status})

    def _merge(self, call: Any, name: str, body: dict[str, Any]) -> None:
        call(name, self.namespace, body, _content_type="application/merge-patch+json")


def _controlled_by(replica_set: dict[str, Any], uid: str) -> bool:
    references = replica_set["metadata"].get("ownerReferences", [])
    return any(ref["uid"] == uid and ref.get("controller") for ref in references)


def _revision(replica_set: dict[str, Any]) -> int:
    return int(replica_set["metadata"]["annotations"][REVISION_ANNOTATION])


def _holds(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether `current` already has every value of `wanted`."""
    return all(current.get(key) == value for key, value in wanted.items())


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    stripped = copy.deepcopy(template)
    stripped["metadata"].get("labels", {}).pop("pod-template-hash", None)
    return stripped


def pinned_ref_of(template: dict[str, Any]) -> str | None:
    for container in template["spec"]["containers"]:
        for variable in container.get("env", []):
            if variable["name"] == MODEL_REF_ENV:
                return str(variable["value"])
    return None


@dataclass
class ScriptedClock:
    """The flow's clock in the emulated cluster: each sleep is a controller step, no real wait."""

    controller: ScriptedController
    seconds: float = 0.0

    def now(self) -> float:
        return self.seconds

    def sleep(self, seconds: float) -> None:
        self.seconds += seconds
        self.controller.step(self.seconds)


# --- the two clusters the tests run against -----------------------------------------------------


class Cluster(Protocol):
    """What a deploy test needs from Kubernetes, emulated or real."""

    namespace: str
    admin: ApiClient
    clock: Any

    def kubeconfig(self, account: str) -> Path:
        """A kubeconfig that acts as `account` (FLOWS_ACCOUNT or NO_PATCH_ACCOUNT)."""
        ...

    def create_deployments(
        self, ref: str, progress_deadline_seconds: int, unhealthy: set[str]
    ) -> None:
        """The flow's Deployments, pinned to `ref` and rolled out: where a deploy starts from.

        Their pods never become ready while they pin a model in `unhealthy`.
        """
        ...

    def settle(self) -> None:
        """Wait for the rollouts in progress (a rollback's, say) to finish."""
        ...


@dataclass
class EmulatedCluster:
    """The emulator, with the scripted controller and clock, and the manifests' Deployments."""

    server: ApiServer
    host: str
    folder: Path
    namespace: str = NAMESPACE
    admin: ApiClient = field(init=False)
    controller: ScriptedController = field(init=False)
    clock: ScriptedClock = field(init=False)

    def __post_init__(self) -> None:
        self.admin = client_for(self.host, ADMIN_TOKEN)
        self.controller = ScriptedController(self.admin, self.namespace)
        self.clock = ScriptedClock(self.controller)

    def kubeconfig(self, account: str) -> Path:
        return write_kubeconfig(self.folder / f"{account}.kubeconfig", self.host, account)

    def create_deployments(
        self, ref: str | None, progress_deadline_seconds: int, unhealthy: set[str]
    ) -> None:
        self.controller.unhealthy = set(unhealthy)
        apps = AppsV1Api(self.admin)
        for name, container_name in CONTAINERS.items():
            body = manifest_deployment(name)
            if ref is not None:  # else as the manifests ship them: following the alias
                body = pin(body, container_name, ref)
            for key in ("uid", "generation"):
                body["metadata"].pop(key)
            body["spec"]["progressDeadlineSeconds"] = progress_deadline_seconds
            apps.create_namespaced_deployment(self.namespace, as_model(body))
        self.controller.settle()

    def settle(self) -> None:
        self.controller.settle(self.clock.seconds)

    @contextmanager
    def controller_in_background(self, every: float = 0.05) -> Iterator[None]:
        """The controller on the real clock, in a thread: for flows that wait by the real one."""
        stop = threading.Event()
        start = time.monotonic()

        def run() -> None:
            while not stop.wait(every):
                self.controller.step(time.monotonic() - start)

        thread = threading.Thread(target=run, name="scripted-controller", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)


@contextmanager
def emulated_cluster(folder: Path) -> Iterator[EmulatedCluster]:
    identities = {
        FLOWS_ACCOUNT: Identity(
            f"system:serviceaccount:{NAMESPACE}:{FLOWS_ACCOUNT}", deployer_rules()
        ),
        NO_PATCH_ACCOUNT: Identity(
            f"system:serviceaccount:{NAMESPACE}:{NO_PATCH_ACCOUNT}",
            deployer_rules(without="patch"),
        ),
    }
    with emulated_api(identities) as (server, host):
        yield EmulatedCluster(server, host, folder)


@dataclass
class RealCluster:
    """A real cluster from LOANOPS_TEST_KUBECONFIG, in a namespace of the test's own."""

    admin: ApiClient
    folder: Path
    namespace: str = field(default_factory=lambda: f"loanops-deploy-test-{uuid.uuid4().hex[:8]}")
    clock: Any = None

    def kubeconfig(self, account: str) -> Path:
        token = CoreV1Api(self.admin).create_namespaced_service_account_token(
            account,
            self.namespace,
            AuthenticationV1TokenRequest(
                spec=V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
            ),
        )
        assert token.status is not None and token.status.token, "the API server issued no token"
        configuration = self.admin.configuration
        return write_kubeconfig(
            self.folder / f"{account}.kubeconfig",
            configuration.host,
            token.status.token,
            configuration.ssl_ca_cert,
            verify=configuration.verify_ssl,
        )

    def setup(self) -> None:
        core, rbac = CoreV1Api(self.admin), RbacAuthorizationV1Api(self.admin)
        rbac_api = "rbac.authorization.k8s.io/v1"
        core.create_namespace(
            as_model(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
            )
        )
        for account, rules in (
            (FLOWS_ACCOUNT, deployer_rules()),
            (NO_PATCH_ACCOUNT, deployer_rules(without="patch")),
        ):
            core.create_namespaced_service_account(
                self.namespace,
                as_model(
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}
                ),
            )
            rbac.create_namespaced_role(
                self.namespace,
                as_model(
                    {
                        "apiVersion": rbac_api,
                        "kind": "Role",
                        "metadata": {"name": account},
                        "rules": rules,
                    }
                ),
            )
            rbac.create_namespaced_role_binding(
                self.namespace,
                as_model(
                    {
                        "apiVersion": rbac_api,
                        "kind": "RoleBinding",
                        "metadata": {"name": account},
                        "roleRef": {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "Role",
                            "name": account,
                        },
                        "subjects": [
                            {"kind": "ServiceAccount", "name": account, "namespace": self.namespace}
                        ],
                    }
                ),
            )

    def create_deployments(
        self, ref: str, progress_deadline_seconds: int, unhealthy: set[str]
    ) -> None:
        apps = AppsV1Api(self.admin)
        for name, container_name in CONTAINERS.items():
            body = self._deployment(name, container_name, ref, progress_deadline_seconds, unhealthy)
            apps.create_namespaced_deployment(self.namespace, as_model(body))
        self.settle()

    def settle(self, timeout: float = 300) -> None:
        apps = AppsV1Api(self.admin)
        wait_for(
            lambda: all(
                rollout_status(d).state != "waiting"
                for d in apps.list_namespaced_deployment(self.namespace).items
            ),
            timeout=timeout,
            what=f"the rollouts in {self.namespace} to settle",
            interval=2,
        )

    def teardown(self) -> None:
        CoreV1Api(self.admin).delete_namespace(self.namespace)

    def _deployment(
        self,
        name: str,
        container_name: str,
        ref: str,
        progress_deadline_seconds: int,
        unhealthy: set[str],
    ) -> dict[str, Any]:
        labels = {"app.kubernetes.io/name": name}
        # Ready unless the pinned model is one of the unhealthy ones.
        ready = (
            'for bad in $UNHEALTHY_MODELS; do [ "$bad" != "$LOANOPS_MODEL_REF" ] || exit 1; done'
        )
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 2,
                "progressDeadlineSeconds": progress_deadline_seconds,
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                },
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {"loanops.io/model-version": ref.rsplit("/", 1)[-1]},
                    },
                    "spec": {
                        "automountServiceAccountToken": False,
                        "terminationGracePeriodSeconds": 1,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65534,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": container_name,
                                "image": "busybox:1.36",
                                "command": ["sh", "-c", "sleep 100000"],
                                "env": [
                                    {
                                        "name": "UNHEALTHY_MODELS",
                                        "value": " ".join(sorted(unhealthy)),
                                    },
                                    {"name": MODEL_REF_ENV, "value": ref},
                                ],
                                "readinessProbe": {
                                    "exec": {"command": ["sh", "-c", ready]},
                                    "periodSeconds": 2,
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                            }
                        ],
                    },
                },
            },
        }


def given_kubeconfig() -> str | None:
    """The kubeconfig of a real cluster to run the deploy tests against, when one is given."""
    return os.environ.get("LOANOPS_TEST_KUBECONFIG") or None


@contextmanager
def real_cluster(folder: Path) -> Iterator[RealCluster]:
    path = given_kubeconfig()
    assert path, "LOANOPS_TEST_KUBECONFIG is not set"
    cluster = RealCluster(kube_config.new_client_from_config(config_file=path), folder)
    cluster.setup()
    try:
        yield cluster
    finally:
        cluster.teardown()
