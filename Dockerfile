# rollguard daemon image.
#
# Two stages: `build` installs rollguard and exactly the versions pinned in constraints.txt into a venv;
# the runtime stage copies only that venv onto a fresh slim base (no pip cache, no sources, no build files).
#
# The base is pinned by tag. For reproducible production builds pin it by digest as well, e.g.
#   FROM python:3.11-slim-bookworm@sha256:<digest> AS build
# (`docker buildx imagetools inspect python:3.11-slim-bookworm` prints the digest), and let a bot such
# as Renovate or Dependabot bump it; both stages must use the same base, since the venv's interpreter
# is a symlink to /usr/local/bin/python3.11 in that base.

FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/rollguard

WORKDIR /src
# Only what `pip install .` needs (README.md is the package's long description); .dockerignore keeps the rest out.
COPY pyproject.toml constraints.txt README.md ./
COPY daemon ./daemon
# `-c constraints.txt` pins every runtime dependency. The file also pins test tools; constraints only
# apply to what is installed, and `.` (no [test] extra) installs none of them. The bytecode is compiled
# here because the runtime root filesystem is read-only.
RUN /opt/rollguard/bin/pip install --no-cache-dir -c constraints.txt . \
 && /opt/rollguard/bin/python -m compileall -q /opt/rollguard/lib

FROM python:3.11-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="rollguard" \
      org.opencontainers.image.description="Watches Kubernetes Deployment rollouts, judges them by SRE-written rules and rolls back bad ones." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

COPY --from=build /opt/rollguard /opt/rollguard

# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in the cluster (the bytecode was compiled in
# the build stage). HOME=/tmp: anything that expands "~" lands in the pod's writable emptyDir.
ENV PATH=/opt/rollguard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    HOME=/tmp

# Numeric user and group (no /etc/passwd entry needed), so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532

# /healthz, /readyz, /metrics and /api/v1/analyses (ROLLGUARD_HTTP_LISTEN, default 0.0.0.0:8080).
EXPOSE 8080

# No HEALTHCHECK: Kubernetes ignores it and probes /healthz (liveness) and /readyz (readiness) itself,
# as the Helm chart configures; a HEALTHCHECK would also need a shell or curl in the image.

# Exec form: rollguard is PID 1 and receives SIGTERM directly; no shell is involved at run time.
ENTRYPOINT ["rollguard", "run"]
