# syntax=docker/dockerfile:1
# One image for every pod-monitor process: the watcher, the Celery workers,
# Beat and Flower. Each Deployment or compose service picks its command.
#
# NOTE: the base is pinned by tag only. Pin it by digest for release builds
# (python:3.11-slim@sha256:...), so a rebuild cannot change the base.
ARG PYTHON_IMAGE=python:3.11-slim

# Build stage: turn the checkout into a wheel, so the runtime stage installs
# exactly what a user would get from `pip install pod-monitor`.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY watcher ./watcher
COPY tasks ./tasks
COPY runner ./runner
COPY local_stack ./local_stack
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Numeric ids, so that Kubernetes can check runAsNonRoot without reading
# /etc/passwd. The manifests and docker-compose.yml use the same ids.
RUN groupadd --system --gid 10001 pod-monitor \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /tmp --shell /usr/sbin/nologin pod-monitor

COPY --from=build /dist /tmp/dist
# The wheel's name is only known after the build stage, so the shell finds
# it; the flower extra adds Flower for the monitoring Deployment.
RUN pip install --no-cache-dir "$(ls /tmp/dist/pod_monitor-*.whl)[flower]" \
    && rm -rf /tmp/dist

# The in-pod runner at a path that does not depend on the Python version.
# Execution pods copy it from here with an init container
# (deploy/kubernetes/examples/execution-pod.yaml).
RUN install -D -m 0444 \
        "$(python -c 'import runner.execution_runner as r; print(r.__file__)')" \
        /opt/pod-monitor/execution_runner.py

USER 10001:10001
WORKDIR /tmp
# The watcher's /livez, /readyz and /metrics; Flower's UI and API.
EXPOSE 8080 5555
CMD ["pod-monitor-watcher"]
