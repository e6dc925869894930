"""`loanops batch submit | status | result`: batch jobs through the scoring API, as any client.

The commands speak HTTP to a running API (`make stack`, or the cluster's Ingress), never to its
database or storage, so they work wherever the API is reachable. Each error is one line: an
unreachable API, a refused key (and how to set one), an unknown job, a file the API refused
(with its field-level detail), or a job that failed (with its error).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.console import console, summary_table
from cli.errors import fail, settings
from cli.options import setting_default
from loanops.settings import ClientSettings

if TYPE_CHECKING:
    import requests

batch_app = typer.Typer(
    help="Batch jobs through the scoring API: submit a file, follow it, fetch its result.",
    no_args_is_help=True,
)

FINISHED = ("succeeded", "failed")
CONTENT_TYPES = {".csv": "text/csv", ".parquet": "application/vnd.apache.parquet"}
POLL_SECONDS = 0.5

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The scoring API's base URL.",
        show_default=setting_default("url", group=ClientSettings),
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="The X-API-Key to send: one of the API's LOANOPS_API_KEYS.",
        show_default="$LOANOPS_API_KEY, else none",
    ),
]
JobIdArgument = Annotated[str, typer.Argument(help="The job id `batch submit` printed.")]


class Api:
    """The scoring API at `url`, called with `key`; every failure ends the command in one line."""

    def __init__(self, url: str | None, key: str | None) -> None:
        import requests

        client = settings().client
        self.url = (url or client.url).rstrip("/")
        chosen = key if key is not None else client.key.get_secret_value() if client.key else None
        self.session = requests.Session()
        if chosen:
            self.session.headers["X-API-Key"] = chosen

    def call(self, method: str, path: str, **options: Any) -> requests.Response:
        import requests

        try:
            response = self.session.request(
                method, f"{self.url}{path}", timeout=options.pop("timeout", 30), **options
            )
        except requests.ConnectionError:
            raise fail(
                f"cannot reach the API at {self.url}: is it running (make stack)? Set --url or "
                "LOANOPS_API_URL to where it listens"
            ) from None
        except requests.Timeout:
            raise fail(f"the API at {self.url} did not answer in time") from None
        if response.status_code == 401:
            raise fail(
                f"the API at {self.url} refused the key: pass one of its LOANOPS_API_KEYS with "
                "--api-key or LOANOPS_API_KEY"
            )
        if response.status_code >= 400:
            raise fail(f"{method} {path} answered {response.status_code}: {explain(response)}")
        return response

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.call("GET", f"/v1/batch-jobs/{job_id}").json()
        return job


def explain(response: requests.Response) -> str:
    """The API's error body in one line: its detail, or each field error as `where: what`."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text.strip()[:200] or response.reason
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(part) for part in error.get('loc', []))}: {error.get('msg')}"
            for error in detail
        )
    return str(detail)


def job_table(job: dict[str, Any]) -> Any:
    """A job's status and counts, as the API reports them."""
    table = summary_table(f"batch job {job['job_id']}: {job['status']}")
    table.add_row("file", f"{job['filename']} ({job['input_format']})")
    table.add_row("model", f"{job['model_name']} v{job['model_version']}")
    total = job.get("total_rows")
    table.add_row("rows", f"{job['rows_done']:,} done of {f'{total:,}' if total else '?'}")
    table.add_row("valid / rejected", f"{job['rows_valid']:,} / {job['rows_rejected']:,}")
    table.add_row("decisions logged", f"{job['decisions_recorded']:,}")
    if job.get("error"):
        table.add_row("error", str(job["error"]))
    return table


def follow(api: Api, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll `job` until it finishes, with a progress bar of its rows on a terminal."""
    from loanops.progress import Progress, report

    deadline = time.monotonic() + timeout
    while job["status"] not in FINISHED:
        if time.monotonic() > deadline:
            raise fail(
                f"job {job['job_id']} is still {job['status']} after {timeout:.0f} s; follow it "
                f"with `loanops batch status {job['job_id']}`"
            )
        time.sleep(POLL_SECONDS)
        job = api.job(job["job_id"])
        report(Progress("rows scored", job["rows_done"], job.get("total_rows")))
    return job


@batch_app.command()
def submit(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="A CSV (with a header row) or Parquet file."
        ),
    ],
    wait: Annotated[
        bool, typer.Option(help="Follow the job until it finishes, with a progress bar.")
    ] = True,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to follow the job before giving up.")
    ] = 3600.0,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Upload a file as a batch job, scored by the version serving now.

    Example: loanops batch submit examples/applications.csv
    """
    from cli.progress import working

    content_type = CONTENT_TYPES.get(file.suffix.lower())
    if content_type is None:
        raise fail(f"{file}: a batch file is .csv or .parquet, not {file.suffix or 'no suffix'!r}")
    api = Api(url, api_key)
    with file.open("rb") as body, working(f"uploading {file.name}…"):
        job: dict[str, Any] = api.call(
            "POST",
            "/v1/batch-jobs",
            params={"filename": file.name},
            data=body,
            headers={"Content-Type": content_type},
            timeout=600,
        ).json()
    if wait:
        with working(f"scoring job {job['job_id']}…"):
            job = follow(api, job, timeout)
    console.print(job_table(job))
    if job["status"] == "failed":
        raise typer.Exit(code=1)
    if job["status"] == "succeeded":
        console.print(f"result: loanops batch result {job['job_id']}", highlight=False)


@batch_app.command()
def status(job_id: JobIdArgument, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """A job's status: rows done of the total, valid and rejected rows, decisions logged.

    Example: loanops batch status 5f0c6d9e2b8a4c1f9e3d7a6b5c4d3e2f
    """
    console.print(job_table(Api(url, api_key).job(job_id)))


@batch_app.command()
def result(
    job_id: JobIdArgument,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            dir_okay=False,
            help="Where to write the scored file.",
            show_default="./<JOB_ID>-scored.<csv|parquet>",
        ),
    ] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Download a finished job's scored file: every input row once, scored or rejected.

    Example: loanops batch result 5f0c6d9e2b8a4c1f9e3d7a6b5c4d3e2f -o scored.csv
    """
    api = Api(url, api_key)
    job = api.job(job_id)
    if job["status"] != "succeeded":
        detail = f": {job['error']}" if job.get("error") else ""
        raise fail(f"job {job_id} is {job['status']}{detail}; it has no result yet")
    response = api.call("GET", f"/v1/batch-jobs/{job_id}/result", stream=True, timeout=600)
    suffix = ".parquet" if job["input_format"] == "parquet" else ".csv"
    path = out or Path(f"{job_id}-scored{suffix}")
    partial = path.with_name(f".{path.name}.part")
    # The file appears whole or not at all: a broken download leaves no half-written result.
    with partial.open("wb") as sink:
        for block in response.iter_content(chunk_size=1 << 20):
            sink.write(block)
    partial.replace(path)
    console.print(
        f"{path}: {job['rows_valid']:,} rows scored, {job['rows_rejected']:,} rejected "
        f"(each with its rejection_reason)",
        highlight=False,
        soft_wrap=True,
    )
