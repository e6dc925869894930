# One image for every loanops process; the command chooses which:
#
#   scoring API       loanops serve --host 0.0.0.0 --port 8000        (the default command)
#   batch worker      loanops worker --concurrency 1
#   flows             loanops retrain, or `prefect flow-run execute` in a Prefect Kubernetes job
#   Prefect worker    prefect worker start --pool loanops-k8s --type kubernetes
#   MLflow server     mlflow server --host 0.0.0.0 --port 5000 ...
#
# Build from the repository root: docker build -t loanops:dev .
# Any Debian-based image with python3 (3.11+), python3-venv and ca-certificates can be the base;
# say where its python3 is:
#   docker build --build-arg PYTHON_IMAGE=debian-python:bookworm --build-arg PYTHON=/usr/bin/python3 .
# A builder behind a TLS-inspecting proxy passes its CA bundle as a secret, which only the install
# steps see and no layer keeps: --secret id=ca,src=/path/to/bundle.pem. Without it the base's own
# bundle is used. No `# syntax=` line: the engine's built-in frontend reads this file, so the
# build never pulls a frontend image.
# tests/manifests/test_dockerfile.py replays the builder's install steps without an engine;
# tests/container/ builds the image and runs it as the manifests do (`make test-container`).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The base image's interpreter: the python images keep it in /usr/local/bin, Debian in /usr/bin.
ARG PYTHON=/usr/local/bin/python3

FROM ${PYTHON_IMAGE} AS builder
ARG PYTHON
# The secret `ca`, when given, is mounted over this bundle for the install steps only.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=${PYTHON} \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
# The installer, pinned to the version `make install` uses (uv==0.13.9 in pyproject.toml), from
# PyPI; it stays in this stage.
RUN --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    ${PYTHON} -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check uv==0.13.9 \
    && ln -s /opt/uv/bin/uv /usr/local/bin/uv
WORKDIR /app
# Dependencies first, from the lock alone: this layer is rebuilt only when the lock changes.
# --locked fails the build when uv.lock no longer matches pyproject.toml.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project
# Then the project itself, installed editable: the venv points at the source under /app.
COPY loanops ./loanops
COPY flows ./flows
COPY serving ./serving
COPY cli ./cli
COPY prefect.yaml ./
RUN --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev

FROM ${PYTHON_IMAGE} AS runtime
# tini runs as PID 1: it forwards SIGTERM to the command and reaps orphaned children. It comes
# from the base's Debian mirror (plain HTTP, signed by the archive key), so no CA is needed here.
# `apt-get clean` because a bare Debian base has no docker-clean hook to drop apt's caches.
# Nothing else is installed: no compiler, no uv, no git.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && apt-get clean \
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
