# One image for the API and the worker: `annoloop api`, `annoloop worker`, `annoloop migrate`.
#   docker build -t annoloop .                                  # CPU-only torch (default)
#   docker build -t annoloop:cuda --build-arg TORCH_VARIANT=cuda .
# TORCH_INDEX_URL overrides the PyTorch wheel index picked by TORCH_VARIANT (a mirror, or another
# CUDA line such as https://download.pytorch.org/whl/cu126); the build fails when the torch it
# got is not the variant asked for. CUDA wheels bring their own CUDA libraries, so the runtime
# stays python:slim; the host needs the NVIDIA driver and the NVIDIA container toolkit.
# PYTHON_IMAGE and PIP_INDEX_URL point at a registry mirror or a package mirror.
# No secret is baked in: every setting comes from the environment.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=""
# cu130: the CUDA line of PyPI's torch, which requirements.lock was resolved against.
ARG TORCH_CUDA=cu130
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/annoloop

# Every version comes from requirements.lock (`make lock`), so that a rebuild gives the same
# environment as CI; torch and torchvision too, only their wheels come from the variant's index.
COPY requirements.lock ./

# torch on its own layer (hundreds of MB CPU, 5.9 GB CUDA): rebuilt when the variant or the
# lock changes, not on every code change. The wheels come from the variant's index without
# their dependencies, which then come from PIP_INDEX_URL under the lock. The build stops here
# if the torch it got is not the variant asked for (PyPI's Linux torch is the CUDA build).
RUN case "${TORCH_VARIANT}" in \
      cpu) index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" ;; \
      cuda) index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/${TORCH_CUDA}}" ;; \
      *) echo "TORCH_VARIANT must be cpu or cuda, not ${TORCH_VARIANT}" >&2; exit 1 ;; \
    esac \
    && grep -E '^(torch|torchvision)==' requirements.lock > /tmp/torch.txt \
    && [ "$(wc -l < /tmp/torch.txt)" -eq 2 ] \
    && pip install --no-deps --index-url "${index}" --requirement /tmp/torch.txt \
    && pip install --constraint requirements.lock --requirement /tmp/torch.txt \
    && python -c 'import sys, torch; want, index = sys.argv[1:]; cuda = torch.version.cuda; built = f"CUDA {cuda}" if cuda else "the CPU only"; sys.exit(0 if (cuda is None) == (want == "cpu") else f"TORCH_VARIANT={want}, but {index} gave torch {torch.__version__}, built for {built}: set TORCH_INDEX_URL to an index of {want} wheels (PyPI has the CUDA build for Linux x86_64)")' "${TORCH_VARIANT}" "${index}" \
    && python -c 'import sys, torch; print(f"variant={sys.argv[1]} torch={torch.__version__} cuda={torch.version.cuda} index={sys.argv[2]}")' "${TORCH_VARIANT}" "${index}" \
       | tee /opt/venv/torch-variant

# The other runtime dependencies, named by pyproject.toml and pinned by the lock: cached until
# either changes. setuptools (pinned too) builds the project below without a download.
COPY pyproject.toml README.md ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
    && pip install --constraint requirements.lock --requirement /tmp/requirements.txt setuptools

# The project itself. Editable, so that the frontend and the demo data stay where the code
# expects them (next to app/), and nothing is installed twice.
COPY app ./app
COPY worker ./worker
COPY annoloop ./annoloop
COPY migrations ./migrations
COPY frontend ./frontend
COPY alembic.ini ./
RUN pip install --no-deps --no-build-isolation --editable . \
    && pip check \
    && python -m compileall -q app worker annoloop migrations


FROM ${PYTHON_IMAGE} AS runtime
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
