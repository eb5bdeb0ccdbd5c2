# The API image: FastAPI, the job store and the Celery producer, without torch.
# The API never imports torch (a test starts it with torch unimportable), so this image
# installs the project with --no-deps and lists its runtime dependencies explicitly
# (docker/api-requirements.txt). Build from the repository root:
#   docker build -f docker/api.Dockerfile -t dcl-service-api .
# Another base: --build-arg BASE_IMAGE=python:3.12-slim (any Debian-like image with `python`
# and `pip` on PATH; the compose test builds on a local stand-in, see tests/compose/).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# One unprivileged user, uid 1000 in both images, so that the API and the workers can write
# to the shared data volume; /data belongs to it (a new named volume takes that ownership).
RUN (getent passwd 1000 >/dev/null || useradd --uid 1000 --user-group --create-home dcl) \
    && mkdir -p /data && chown 1000:1000 /data

WORKDIR /app
COPY docker/api-requirements.txt /tmp/api-requirements.txt
RUN pip install -r /tmp/api-requirements.txt

COPY pyproject.toml README.md ./
COPY dcl_core ./dcl_core
COPY service ./service
COPY worker ./worker
COPY dcl_service ./dcl_service
# Fails the build if anything pulled torch in, or if `dcl serve` is missing.
RUN pip install --no-deps . \
    && python -c "import importlib.util as u, sys; sys.exit('torch is in the API image' if u.find_spec('torch') else 0)" \
    && dcl serve --help >/dev/null

USER 1000:1000
ENV DCL_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000
# API only (no embedded worker: this image has no torch). Listening on 0.0.0.0 needs DCL_API_KEYS.
CMD ["dcl", "serve", "--no-embedded", "--host", "0.0.0.0", "--port", "8000"]
