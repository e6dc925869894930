# syntax=docker/dockerfile:1.7
# One image for every loanops process; the command chooses which:
#
#   scoring API       loanops serve --host 0.0.0.0 --port 8000        (the default command)
#   batch worker      loanops worker --concurrency 1
#   flows             loanops retrain, or `prefect flow-run execute` in a Prefect Kubernetes job
#   Prefect worker    prefect worker start --pool loanops-k8s --type kubernetes
#   MLflow server     mlflow server --host 0.0.0.0 --port 5000 ...
#
# Build from the repository root: docker build -t loanops:dev .
# tests/manifests/test_dockerfile.py replays the builder's install steps and runs the commands
# above from the venv they make; no Docker engine runs on our machines, so nothing else here is
# exercised by the tests.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The installer is pinned to the version `make install` uses (uv==0.13.9 in pyproject.toml).
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /app
# Dependencies first, from the lock alone: this layer is rebuilt only when the lock changes.
# --locked fails the build when uv.lock no longer matches pyproject.toml.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project
# Then the project itself, installed editable: the venv points at the source under /app.
COPY loanops ./loanops
COPY flows ./flows
COPY serving ./serving
COPY cli ./cli
COPY prefect.yaml ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev

FROM ${PYTHON_IMAGE} AS runtime
# tini runs as PID 1: it forwards SIGTERM to the command and reaps orphaned children.
# Nothing else is installed: no compiler, no uv, no git.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 loanops \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/loanops --create-home \
        --shell /usr/sbin/nologin loanops
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
# OMP_NUM_THREADS=1: with two OpenMP threads single-row predictions stalled now and then.
# PYTHONDONTWRITEBYTECODE=1: the venv is compiled at build time and the root filesystem is
# read-only in Kubernetes. HOME, LOANOPS_HOME (embedded state, for a plain `docker run` in dev
# mode) and PREFECT_HOME sit on a volume the manifests mount there. LOANOPS_PROJECT_DIR is where
# prefect.yaml's deployments find the flows.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    HOME=/home/loanops \
    LOANOPS_HOME=/home/loanops/.loanops \
    PREFECT_HOME=/home/loanops/.prefect \
    LOANOPS_PROJECT_DIR=/app
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["loanops", "serve", "--host", "0.0.0.0", "--port", "8000"]
