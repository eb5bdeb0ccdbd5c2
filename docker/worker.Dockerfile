# The worker image: the engine on CUDA PyTorch, and the Celery worker around it.
# The base image brings torch and torchvision built for CUDA; they are kept as they are
# (pinned by a constraints file) while the project and its other dependencies go in.
# The host needs the NVIDIA driver and the NVIDIA Container Toolkit; the CUDA runtime is in
# the image. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t dcl-service-worker .
# Another CUDA or PyTorch version: --build-arg BASE_IMAGE=pytorch/pytorch:<version>-cuda<x.y>-cudnn9-runtime
ARG BASE_IMAGE=pytorch/pytorch:2.10.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The same uid as the API image's user: both write to the shared data volume.
RUN (getent passwd 1000 >/dev/null || useradd --uid 1000 --user-group --create-home dcl) \
    && mkdir -p /data && chown 1000:1000 /data

WORKDIR /app
# Dependencies first, in a layer of their own that only a change to pyproject.toml rebuilds
# (a code change then rebuilds in seconds). They are resolved from an empty copy of the
# project; torch and torchvision stay as the base has them.
COPY pyproject.toml ./
RUN python -c "from importlib.metadata import version as v; print('torch==' + v('torch')); print('torchvision==' + v('torchvision'))" > /tmp/keep-torch.txt \
    && mkdir dcl_core && touch README.md \
    && pip install -c /tmp/keep-torch.txt ".[postgres,timm,onnx,tracking]" \
    && pip uninstall -y dcl-service \
    && rm -rf /app/*

COPY pyproject.toml README.md ./
COPY dcl_core ./dcl_core
COPY service ./service
COPY worker ./worker
COPY dcl_service ./dcl_service
RUN pip install -c /tmp/keep-torch.txt ".[postgres,timm,onnx,tracking]" \
    && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
    && dcl worker --help >/dev/null

USER 1000:1000
ENV DCL_DATA_DIR=/data
VOLUME ["/data"]
# One process, one GPU: the container is given one GPU (see docker-compose.yml).
CMD ["dcl", "worker", "--queues", "gpu,cpu"]
