"""The UIs of `make stack`, in a real browser: headless Chromium (Debian's) driven by Playwright.

The stack is started exactly as `make stack` starts it (`loanops stack up`, on free ports, in a
temporary LOANOPS_HOME): a real `mlflow server` on SQLite, a real `prefect server`, the API under
uvicorn and a Celery worker, each a program of the stack's supervisord. A small model is
registered and made production first, the way `make demo` leaves the store, and a deploy is
recorded in the promotion log. Then Chromium opens the MLflow UI through the links the CLI prints
(`loanops.mlflow_links`: the runs table, a run, the registered model with its `production`
alias, the promotion log), the API's /docs (Swagger UI, served by the API itself, no CDN), the
Prefect UI, the version's model card as the promote flow logs it, and a monitor report, and
saves a screenshot of each into $LOANOPS_TEST_ARTIFACTS/ui, or `test-artifacts/ui` in the
repository when that is unset; the paths are printed. Last, `loanops stack down` must leave no
process behind, supervisord included.

Only a missing Chromium skips these tests; Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import commands as stack_commands
from cli.stack.supervisor import Supervisor
from loanops import promotion_log, registry
from loanops.mlflow_links import model_url, promotion_log_url, run_url, runs_url
from loanops.settings import Settings, TrainingSettings
from serving.app import offline_docs_assets
from tests.integration.serving_fixtures import promote, register_version
from tests.integration.ui_pages import (
    compare_report_folder,
    model_card_folder,
    monitor_report_folder,
)
from tests.processes import alive
from tests.services import free_port

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("LOANOPS_TEST_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
PAGE_TIMEOUT_MS = 60_000

if not CHROMIUM.exists():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install Debian's `chromium` package (apt-get install -y "
        "chromium), or point LOANOPS_TEST_CHROMIUM at one",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402


@dataclass(frozen=True)
class Stack:
    """A running `make stack` in a temporary home."""

    home: Path
    env: dict[str, str]
    model_name: str
    version: str
    mlflow: str
    prefect: str
    api: str
    up_output: str
    experiment_id: str
    promotions_experiment_id: str
    run_id: str
    deploy_run_name: str

    def settings(self) -> Settings:
        """Settings that reach the stack's store through its MLflow server."""
        return Settings(
            home=self.home,
            model_name=self.model_name,
            tracking_uri=self.mlflow,
            training=TrainingSettings(dataset="synthetic"),
        )

    def supervisor(self) -> Supervisor:
        return stack_commands.supervisor_for(stack_commands.StackPaths(self.home / "stack"))

    def pids(self) -> list[dict[str, Any]]:
        """Each program of the stack's supervisord: its name and PID."""
        return [{"name": p.name, "pid": p.pid} for p in self.supervisor().processes()]


def run_stack(command: str, env: dict[str, str], *ports: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("loanops")), "stack", command, *ports],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("stack-home")
    model_name = f"ui-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        home=home, model_name=model_name, training=TrainingSettings(dataset="synthetic")
    )
    version = register_version(settings, seed=0, rows=2000)
    promote(settings, version)
    deploy = record_a_deploy(settings, version)
    client = registry.connect(settings)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    run_id = client.get_model_version(model_name, version).run_id
    assert experiment is not None and run_id is not None

    env = {
        **os.environ,
        "LOANOPS_HOME": str(home),
        "LOANOPS_MODEL_NAME": model_name,
        "LOANOPS_DATASET": "synthetic",
        # The session's PREFECT_HOME is shared with other tests' temporary servers.
        "PREFECT_HOME": str(home / "prefect"),
    }
    env.pop("PREFECT_API_URL", None)
    ports = {"mlflow": free_port(), "prefect": free_port(), "api": free_port()}
    options = [f"--{name}-port={port}" for name, port in ports.items()]
    started = time.monotonic()
    up = run_stack("up", env, *options)
    print(f"stack up: {time.monotonic() - started:.1f} s")
    try:
        assert up.returncode == 0, f"stack up failed:\n{up.stdout}\n{up.stderr}"
        yield Stack(
            home=home,
            env=env,
            model_name=model_name,
            version=version,
            mlflow=f"http://127.0.0.1:{ports['mlflow']}",
            prefect=f"http://127.0.0.1:{ports['prefect']}",
            api=f"http://127.0.0.1:{ports['api']}",
            up_output=up.stdout,
            experiment_id=experiment.experiment_id,
            promotions_experiment_id=client.get_run(deploy.run_id).info.experiment_id,
            run_id=run_id,
            deploy_run_name=f"v{version} deployed",
        )
    finally:
        run_stack("down", env)  # a no-op when the last test has stopped it already


def record_a_deploy(settings: Settings, version: str) -> promotion_log.DeployRecord:
    """A deploy of `version` in the promotion log, as the deploy flow records one."""
    record = promotion_log.DeployRecord(
        deployed_at="2026-12-01T09:00:00+00:00",
        deployed_by="ui-test",
        model_name=settings.model_name,
        outcome="deployed",
        version=version,
        previous_version=None,
        production_version=version,
        namespace="loanops",
        rollouts={"loanops-api": "successfully rolled out"},
        reasons=[],
    )
    key = promotion_log.deploy_id(settings.model_name, version, None)
    return promotion_log.record_deploy(registry.connect(settings), settings, record, deploy_key=key)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Chromium's sandbox needs user namespaces, which root in a container does not get.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[*args, "--disable-dev-shm-usage"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    """Where the screenshots (and the pages they show) stay after the run, for the reader."""
    configured = os.environ.get("LOANOPS_TEST_ARTIFACTS")
    folder = (Path(configured) if configured else ROOT / "test-artifacts") / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def save(page: Page, folder: Path, name: str, capsys: pytest.CaptureFixture[str]) -> Path:
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    with capsys.disabled():
        print(f"\n  screenshot: {path}")
    return path


def save_viewport(page: Page, folder: Path, name: str, capsys: pytest.CaptureFixture[str]) -> Path:
    """The top of a long page (the monitor report is many screens tall)."""
    path = folder / name
    page.screenshot(path=str(path))
    with capsys.disabled():
        print(f"\n  screenshot: {path}")
    return path


def test_stack_up_prints_the_urls(stack: Stack) -> None:
    for url in (stack.mlflow, stack.prefect, f"{stack.api}/docs"):
        assert url in stack.up_output
    assert f"production → v{stack.version}" in stack.up_output
    assert "/readyz: ready" in stack.up_output
    assert {s["name"] for s in stack.pids()} == {"redis", "mlflow", "prefect", "api", "worker"}


def test_second_up_is_refused(stack: Stack) -> None:
    again = run_stack("up", stack.env, "--mlflow-port=1", "--prefect-port=2", "--api-port=3")
    assert again.returncode == 1
    assert "already running" in again.stderr


def test_mlflow_links_land_on_the_runs_not_the_genai_overview(
    stack: Stack, page: Page, screenshots: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page.goto(runs_url(stack.mlflow, stack.experiment_id))
    page.get_by_text("fixture-0", exact=True).first.wait_for()
    page.get_by_text(re.compile(r"^1 matching run$")).wait_for()
    assert "/runs" in page.url and "workflowType=machine_learning" in page.url
    assert page.get_by_text("No data available for the selected time range").count() == 0
    save(page, screenshots, "mlflow-runs.png", capsys)

    page.goto(run_url(stack.mlflow, stack.experiment_id, stack.run_id))
    page.get_by_text(stack.run_id, exact=True).first.wait_for()
    page.get_by_text("test_roc_auc", exact=True).first.wait_for()

    page.goto(promotion_log_url(stack.mlflow, stack.promotions_experiment_id))
    page.get_by_text(stack.deploy_run_name, exact=True).first.wait_for()
    assert "/runs" in page.url
    save(page, screenshots, "mlflow-promotion-log.png", capsys)


def test_mlflow_ui_shows_the_model_with_its_production_alias(
    stack: Stack, page: Page, screenshots: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page.goto(model_url(stack.mlflow, stack.model_name))
    page.get_by_role("heading", name=stack.model_name).wait_for()
    # The alias tag reads "@ production", beside the version it points at.
    alias = page.get_by_text(re.compile(r"^@\s*production$"))
    alias.first.wait_for()
    row = page.locator("tr, [role=row]").filter(has=alias.first)
    assert f"Version {stack.version}" in row.first.inner_text()
    assert save(page, screenshots, "mlflow-registered-model.png", capsys).stat().st_size > 0


def test_model_card_shows_its_plots(
    stack: Stack, page: Page, screenshots: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = model_card_folder(stack.settings(), stack.version, screenshots / "model-card")
    page.goto(card.page.as_uri())
    page.get_by_role("heading", name=f"Model card: {stack.model_name} v{stack.version}").wait_for()
    images = loaded_images(page)
    assert sorted(images) == sorted(card.figures), images
    assert all(width > 0 for width in images.values()), f"images that did not load: {images}"
    save(page, screenshots, "model-card.png", capsys)


def test_monitor_report_shows_its_title_and_shares(
    stack: Stack, page: Page, screenshots: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = monitor_report_folder(stack.model_name, stack.version, screenshots / "monitor")
    page.goto(report.page.as_uri())
    page.get_by_text(report.title, exact=True).wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    save_viewport(page, screenshots, "monitor-report.png", capsys)
    # The first distribution that Evidently draws with its abs/perc buttons opens on perc.
    plot = page.locator(".js-plotly-plot").filter(has_text="perc").first
    plot.scroll_into_view_if_needed()
    assert "Percent" in plot.inner_text()
    box = plot.bounding_box()
    assert box is not None
    # The plot's whole row: the feature's name and statistics sit to its left.
    top = max(0.0, box["y"] - 80)
    path = screenshots / "monitor-report-distribution.png"
    page.screenshot(
        path=str(path), clip={"x": 0, "y": top, "width": 1400, "height": box["height"] + 120}
    )
    with capsys.disabled():
        print(f"\n  screenshot: {path}")


def loaded_images(page: Page) -> dict[str, int]:
    """Each <img> of the page by its src, with its natural width (0: it did not load)."""
    page.wait_for_function("[...document.images].every(image => image.complete)")
    widths: dict[str, int] = page.evaluate(
        "Object.fromEntries([...document.images].map(i => [i.getAttribute('src'), i.naturalWidth]))"
    )
    return widths


def test_compare_report_shows_the_swap_set_and_the_auc_interval(
    page: Page, screenshots: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = compare_report_folder("loan-default", screenshots / "compare")
    page.goto(report.page.as_uri())
    page.get_by_role("heading", name=report.title).wait_for()
    page.get_by_role("heading", name="Swap set").wait_for()
    assert page.get_by_text("challenger better").count() >= 1
    save(page, screenshots, "compare-report.png", capsys)


def test_api_docs_render_without_a_cdn(
    stack: Stack, page: Page, screenshots: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if offline_docs_assets() is None:
        pytest.fail(
            "the Swagger UI assets are not installed, so /docs loads them from a CDN that is "
            "unreachable here: add `fastapi-offline` to the dependencies in pyproject.toml"
        )
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{stack.api}/docs")
    page.locator(".swagger-ui .info .title", has_text="loanops scoring API").wait_for()
    predict = page.locator('.opblock-summary-path[data-path="/v1/predict"]')
    predict.wait_for()
    for path in ("/v1/batch-jobs", "/v1/model", "/readyz"):
        assert page.locator(f'.opblock-summary-path[data-path="{path}"]').count() == 1
    # Open POST /v1/predict: its example is the serving model's own input example.
    predict.click()
    body = page.locator(".opblock.is-open .opblock-section-request-body")
    body.wait_for()
    assert "loan_amnt" in body.inner_text()
    save(page, screenshots, "api-docs.png", capsys)
    foreign = [url for url in requested if not url.startswith(stack.api)]
    assert not foreign, f"/docs fetched from outside the API: {foreign}"


def test_prefect_ui_reaches_its_api(
    stack: Stack, page: Page, screenshots: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failed: list[str] = []
    page.on(
        "requestfailed",
        lambda request: failed.append(request.url) if "127.0.0.1" in request.url else None,
    )
    page.goto(f"{stack.prefect}/")
    page.get_by_text("Dashboard").first.wait_for()
    page.wait_for_load_state("networkidle")
    assert page.get_by_text("Unable to connect to Prefect server").count() == 0
    assert not failed, f"the Prefect UI could not reach {failed}"
    save(page, screenshots, "prefect-ui.png", capsys)


def test_stack_down_leaves_no_process(stack: Stack) -> None:
    pids = [s["pid"] for s in stack.pids()]
    groups = set(pids)
    pids.append(stack.supervisor().pid())
    # The API's decision-log writer runs in a session of its own: found through its parent.
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) in groups:
            children.add(int(stat.parent.name))
    down = run_stack("down", stack.env)
    assert down.returncode == 0, down.stderr
    assert "none is left" in down.stdout
    for pid in [*pids, *children]:
        assert not alive(pid), f"process {pid} outlived `stack down`"
    assert not (stack.home / "stack" / "services.json").exists()
    assert not stack.supervisor().config.exists()
    for url in (f"{stack.mlflow}/health", f"{stack.api}/healthz", f"{stack.prefect}/api/health"):
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=2)
    again = run_stack("down", stack.env)
    assert again.returncode == 0 and "not running" in again.stdout
