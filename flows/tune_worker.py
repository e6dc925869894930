"""The tuning worker as a flow, for the Kubernetes work pool: one flow run per worker.

`LOANOPS_TUNE_LAUNCHER=prefect` makes the train flow start `LOANOPS_TUNE_WORKERS` runs of the
`tune-worker` deployment (prefect.yaml) and wait for them; each becomes a pod on the work pool,
runs `loanops.tune_workers.run_worker` against the shared study, and ends. Locally the same
worker runs as a process (`loanops tune-worker`), with no flow around it.
"""

from __future__ import annotations

import time
from typing import cast

from prefect import flow, get_client, get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from flows.common import settings_for
from loanops.settings import Settings
from loanops.tune_workers import run_worker, worker_overrides

DEPLOYMENT = "tune-worker/tune-worker"
_POLL_SECONDS = 10.0


@flow(name="tune-worker")
def tune_worker_flow(
    run_id: str,
    worker: int,
    training: dict[str, object] | None = None,
    data_path: str | None = None,
) -> None:
    """Pull trials from the shared study of training run `run_id` until its budget is met.

    Args:
        run_id: the training run whose study this worker joins.
        worker: this worker's index, which offsets its sampler's seed.
        training: the training settings the run was started with (dataset, rows, seed, budget).
        data_path: the file the run trains on, when it is not the dataset itself.
    """
    settings = settings_for(training=training or {})
    run_worker(settings, run_id, worker, data_path)


def run_workers_on_the_pool(settings: Settings, run_id: str, data_path: str | None) -> None:
    """Start one `tune-worker` flow run per worker, and wait for all of them to end.

    A worker that fails does not stop the others: the study's budget is met by whoever is left.
    """
    logger = get_run_logger()
    # run_deployment is sync-compatible: called from sync code it returns the FlowRun itself.
    runs = [
        cast(
            FlowRun,
            run_deployment(
                DEPLOYMENT,
                parameters={
                    "run_id": run_id,
                    "worker": worker,
                    "training": worker_overrides(settings),
                    "data_path": data_path,
                },
                flow_run_name=f"tune-{run_id[:8]}-{worker}",
                timeout=0,
            ),
        )
        for worker in range(settings.training.tune_workers)
    ]
    waiting = {run.id for run in runs}
    with get_client(sync_client=True) as client:
        while waiting:
            time.sleep(_POLL_SECONDS)
            for run_id_ in list(waiting):
                run = client.read_flow_run(run_id_)
                if run.state is not None and run.state.is_final():
                    waiting.discard(run_id_)
                    if not run.state.is_completed():
                        logger.warning("tuning worker %s ended %s", run.name, run.state.name)
