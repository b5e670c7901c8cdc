# One image for the API and the worker: `annoloop api`, `annoloop worker`, `annoloop migrate`.
#   docker build -t annoloop .                                  # CPU-only torch (default)
#   docker build -t annoloop:cuda --build-arg TORCH_VARIANT=cuda .
# TORCH_INDEX_URL overrides the PyTorch wheel index picked by TORCH_VARIANT (e.g. a mirror,
# or another CUDA line such as https://download.pytorch.org/whl/cu126). CUDA wheels bring their
# own CUDA libraries, so the runtime stays python:slim; the host needs the NVIDIA driver and
# the NVIDIA container toolkit. No secret is baked in: every setting comes from the environment.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=""
ARG TORCH_CUDA=cu128
# Pinned so that a rebuild gives the same numbers; keep in step with the development venv.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/annoloop

# torch first and on its own layer (~200 MB CPU, ~3 GB CUDA): rebuilt only when the variant
# changes, not on every code change.
RUN case "${TORCH_VARIANT}" in \
      cpu) index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" ;; \
      cuda) index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/${TORCH_CUDA}}" ;; \
      *) echo "TORCH_VARIANT must be cpu or cuda, not ${TORCH_VARIANT}" >&2; exit 1 ;; \
    esac \
    && pip install --index-url "${index}" \
         "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && echo "${TORCH_VARIANT} ${index}" > /opt/venv/torch-variant

# The other runtime dependencies, from pyproject.toml only: cached until it changes.
COPY pyproject.toml README.md ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# The project itself. Editable, so that the frontend and the demo data stay where the code
# expects them (next to app/), and nothing is installed twice.
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
COPY frontend ./frontend
COPY alembic.ini ./
RUN pip install --no-deps --editable . \
    && python -m compileall -q app worker migrations


FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="annoloop" \
      org.opencontainers.image.description="Deep active learning with people in the loop" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ANNOLOOP_DATA_DIR=/var/lib/annoloop \
    ANNOLOOP_LOG_FORMAT=json

# A fixed uid/gid, so that a bind-mounted or NFS blob folder can be chowned to match.
RUN groupadd --system --gid 10001 annoloop \
    && useradd --system --uid 10001 --gid annoloop --home-dir /opt/annoloop \
       --shell /usr/sbin/nologin annoloop \
    && mkdir -p /var/lib/annoloop \
    && chown annoloop:annoloop /var/lib/annoloop

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/annoloop /opt/annoloop
WORKDIR /opt/annoloop
USER 10001:10001

# A named volume mounted here starts with this folder's owner (annoloop).
VOLUME ["/var/lib/annoloop"]
EXPOSE 8000

# The API's /healthz (database and broker reachable). Workers override it in compose with
# `python -m app.observability.healthcheck worker` (a Celery ping of this host's node).
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "app.observability.healthcheck", "api"]

# SIGTERM: uvicorn drains (20 s), Celery does a warm shutdown (finishes the running task).
STOPSIGNAL SIGTERM
CMD ["annoloop", "api", "--host", "0.0.0.0", "--port", "8000"]
