# syntax=docker/dockerfile:1
# The ArdiQ worker image: `docker build -t ardiq .` then
# `docker run --rm -e ARDIQ_REDIS_URL=redis://redis:6379/0 ardiq` runs the example app.
# Your own app: `FROM ardiq`, `COPY` your code into /app, set `ARDIQ_APP` and the command
# (`CMD ["run", "myproj.tasks:app"]`).
#
# The build and install steps live in deploy/docker/*.sh, so tests/test_deploy.py runs
# exactly these steps, in this order, outside Docker.

# ---- builder: the engine and the `ardiq` binary (Rust), the package's wheels ----------
FROM rust:1.85-slim-bookworm AS builder
# Debian's Python 3.11, the same build the runtime stage runs (the binary embeds it).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-dev python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN sh deploy/docker/build.sh /src /wheels

# ---- runtime: CPython, the package and `ardiq`, as a non-root user ----------------------
FROM debian:bookworm-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv libpython3.11 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ardiq \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home ardiq
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,source=deploy/docker/install.sh,target=/tmp/install.sh \
    sh /tmp/install.sh /wheels /opt/ardiq
# The code stays root's: the worker (user 10001) can read but never rewrite the app, the
# venv or site-packages. Nothing needs a writable root filesystem: run it with
# `docker run --read-only --tmpfs /tmp` (PYTHONDONTWRITEBYTECODE: no __pycache__ attempts).
WORKDIR /app
COPY example.py ./
# ARDIQ_APP is what `ardiq check` (the health check) imports: keep it in step with the
# command. The drain deadline (8 s) stays below `docker stop`'s default 10 s, so running
# tasks finish or are handed back before Docker sends SIGKILL.
ENV PATH=/opt/ardiq/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ARDIQ_APP=example:app \
    ARDIQ_SHUTDOWN_TIMEOUT=8 \
    ARDIQ_LOG_FORMAT=json
# Numeric, so `runAsNonRoot` in Kubernetes can check it.
USER 10001:10001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["ardiq", "check"]
ENTRYPOINT ["ardiq"]
CMD ["run", "example:app"]
