"""The batch worker's liveness probe: `python -m serving.batch.probe`.

Sends a Celery control ping through the job queue's Redis and exits 0 when a worker of this
host answers (the worker names itself `loanops-<pid>@<hostname>`, and in Kubernetes the probe
runs in the worker's own container, so the hostname is the pod's), 1 otherwise. A worker whose
consumer is stuck does not answer, which a process check would miss.

With `--tolerate-broker-outage` (the liveness probe) an unreachable Redis counts as a pass: the
worker reconnects by itself when Redis is back, and restarting every worker during an outage
would only add a crash loop to it. Readiness and start-up use the strict form.

It imports Celery and the settings only, not the scoring code, so that a probe every minute
costs a fraction of a second of CPU.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

from loanops.settings import get_settings


def answering_nodes(redis_url: str, timeout: float) -> list[str]:
    """The names of the workers that answer a control ping within `timeout` seconds."""
    from celery import Celery

    app = Celery("loanops-probe", broker=redis_url, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = False
    app.conf.broker_transport_options = {"socket_connect_timeout": timeout}
    try:
        replies = app.control.ping(timeout=timeout) or []
    finally:
        app.close()
    return [name for reply in replies for name in reply]


def main(argv: Sequence[str] | None = None) -> int:
    """Ping this host's worker: 0 when it answers, else 1 (Redis down: 0 if tolerated)."""
    parser = argparse.ArgumentParser(description="Liveness probe of a loanops batch worker.")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="Seconds to wait for the answer."
    )
    parser.add_argument(
        "--tolerate-broker-outage",
        action="store_true",
        help="Pass when Redis cannot be reached: only a worker that fails to answer fails.",
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    if not settings.batch.redis_url:
        sys.stderr.write("worker probe: LOANOPS_REDIS_URL is not set\n")
        return 1
    host = socket.gethostname()
    try:
        nodes = answering_nodes(settings.batch.redis_url, args.timeout)
    except Exception as error:  # any failure to ask is said in one line
        sys.stderr.write(f"worker probe: cannot reach the queue: {error}\n")
        return 0 if args.tolerate_broker_outage else 1
    if any(node.rpartition("@")[2] == host for node in nodes):
        return 0
    sys.stderr.write(
        f"worker probe: no worker on {host} answered within {args.timeout:g} s "
        f"(answered: {', '.join(sorted(nodes)) or 'none'})\n"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
