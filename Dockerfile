# syntax=docker/dockerfile:1
# The operator image: `agentreg run` (kopf handlers + registry API) and `agentreg migrate`.
#   docker build -t agent-registry:0.1.0 .
# The base is pinned to an exact Python patch release and Debian release; pin it by digest too in
# your registry mirror (`--build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...`).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: the wheel, then a venv with it and its dependencies ----------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is made of (see .dockerignore): the source root, the migrations, the metadata.
COPY pyproject.toml setup.py README.md ./
COPY operator/ operator/
COPY migrations/ migrations/
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/agent-registry \
 && /opt/agent-registry/bin/pip install /wheels/agent_registry-*.whl \
 # The wheel must carry the migrations: the init container runs them from the installed package.
 && /opt/agent-registry/bin/python -c "import importlib.resources as r; assert r.files('agent_registry._migrations').joinpath('env.py').is_file()" \
 && /opt/agent-registry/bin/agentreg --help >/dev/null

# ---- final: the venv on the same base, a non-root user, nothing else ------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="agent-registry operator" \
      org.opencontainers.image.source="https://github.com/singularity-dev/agent-registry" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 agentreg \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/agent-registry --no-create-home \
      --shell /usr/sbin/nologin agentreg \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/agent-registry
COPY --from=build /opt/agent-registry /opt/agent-registry
ENV PATH=/opt/agent-registry/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AGENTREG_DATABASE_URL=sqlite+aiosqlite:////var/lib/agent-registry/agent-registry.db
WORKDIR /var/lib/agent-registry
USER 10001:10001
# registry API, kopf health, webhook
EXPOSE 8080 8081 9443
ENTRYPOINT ["agentreg"]
CMD ["run", "--api-listen=0.0.0.0:8080", "--health-listen=0.0.0.0:8081"]
