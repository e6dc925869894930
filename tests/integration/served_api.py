"""One `loanops serve` with API keys and a `loanops worker`, for the modules that call the API.

`keyed_api` (session): the session's production model (`serving_model`) behind a real uvicorn
process, with its batch-job queue on a Redis database of its own and one worker scoring the
chunks, started with the manifests' commands. Starting both costs about half a minute on 2
cores, so the contract fuzzing and the batch CLI share one. A module imports it and the model
it serves: `from tests.integration.served_api import keyed_api` and
`from tests.integration.serving_fixtures import serving_model` (each `# noqa: F401`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.api_fixtures import Server, api_environment, api_settings, loanops_serve
from tests.integration.serving_fixtures import (  # noqa: F401
    ServingModel,
    celery_worker,
    claimed_redis_db,
    serving_model,
)
from tests.services import redis_url


@pytest.fixture(scope="session")
def keyed_api(
    serving_model: ServingModel,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """`loanops serve` and one `loanops worker`, sharing the job queue, database and storage."""
    folder = tmp_path_factory.mktemp("keyed-api")
    with redis_url() as server, claimed_redis_db(server) as queue:
        settings = api_settings(serving_model.settings(), folder, batch={"redis_url": queue})
        with (
            loanops_serve(settings, folder) as api,
            celery_worker(api_environment(settings), log_dir=folder),
        ):
            yield api
