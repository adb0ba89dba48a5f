# facerecon server images. Two targets, one file:
#
#   docker build --target cpu  -t facerecon:0.1.0-cpu  .
#   docker build --target cuda -t facerecon:0.1.0-cuda .
#
# Both run `facerecon serve` (what `make run` runs) as an unprivileged user, serve gRPC on
# 50051 and Prometheus metrics on 9464 (bound to loopback unless FACERECON_METRICS_ADDRESS is
# set, e.g. to 0.0.0.0 as k8s/base/config.env does, to be scraped), and carry the checkpoint in weights/ (bake it in by
# building from a checkout that has weights/facerecon.pt; or mount a checkpoint anywhere
# and point FACERECON_WEIGHTS at it: see k8s/README.md). There is no HEALTHCHECK: the
# orchestrator probes the standard grpc.health.v1 service (k8s/base/deployment.yaml).
#
# Bases are pinned by tag and by digest (the multi-platform index digest). The digests were
# copied from public references on a machine with no registry access: confirm them on the
# first build (`docker buildx imagetools inspect <tag>`), and so when bumping a tag.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
# The torch wheel for CUDA brings its own CUDA 13.0 libraries (cuBLAS, cuDNN, ...), so the
# small `base` flavour, which adds the NVIDIA container hooks and nothing else, is enough;
# the `runtime` flavour would ship a second copy of the same libraries (~3 GB).
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04@sha256:2ab6381d970b211fb93853796dc6707eb8a72575a375c422b17cf4d8b2641701
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu130


# ---- CPU ---------------------------------------------------------------------------------

FROM ${PYTHON_IMAGE} AS cpu-build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
 && pip install --index-url "${TORCH_CPU_INDEX}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml ./
COPY service/ service/
# insightface depends on the GUI build of OpenCV, which needs libGL and X11 at import time;
# both builds ship the same `cv2` package, so the headless build is put back over it, at
# the version pip just resolved (hence DL3013: the pin is computed, not written out).
# hadolint ignore=DL3013
RUN pip install . \
 && pip uninstall --yes opencv-python \
 && pip install --no-deps --force-reinstall "$(pip freeze | grep -i '^opencv-python-headless==')"


FROM ${PYTHON_IMAGE} AS cpu
# Mesa's EGL and its llvmpipe driver: views render through OpenGL with no display, about
# twice as fast as the torch rasteriser the service falls back to without them (README,
# "Speed"). The same Debian 12 packages the development machines render with.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install --yes --no-install-recommends libegl1 libegl-mesa0 libgl1-mesa-dri \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 facerecon \
 && useradd --system --uid 10001 --gid facerecon --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin facerecon
COPY --from=cpu-build /opt/venv /opt/venv
COPY weights/ /opt/facerecon/weights/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FACERECON_WEIGHTS=/opt/facerecon/weights/facerecon.pt
# Fail the build, not the first rollout, if a shared library is missing from the slim base
# or no headless OpenGL context can be made.
RUN python -c "import cv2, torch, facerecon.server" \
 && python -c "import moderngl; moderngl.create_context(standalone=True, backend='egl')"
USER 10001:10001
WORKDIR /opt/facerecon
EXPOSE 50051 9464
ENTRYPOINT ["facerecon", "serve"]


# ---- CUDA --------------------------------------------------------------------------------

FROM ${CUDA_IMAGE} AS cuda-python
# Ubuntu 24.04's own Python 3.12; the build and final stages share this layer, so the
# virtual environment copied between them finds the same interpreter at the same path.
# Not version-pinned (DL3008): the base is pinned by digest, and the archive drops old
# package versions as security fixes land, which would break a pinned build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install --yes --no-install-recommends python3.12 python3.12-venv \
 && rm -rf /var/lib/apt/lists/*


FROM cuda-python AS cuda-build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG TORCH_VERSION
ARG TORCH_CUDA_INDEX
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3.12 -m venv /opt/venv \
 && pip install --index-url "${TORCH_CUDA_INDEX}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml ./
COPY service/ service/
# See the CPU build: the headless OpenCV replaces the GUI build insightface pulls in.
# hadolint ignore=DL3013
RUN pip install . \
 && pip uninstall --yes opencv-python \
 && pip install --no-deps --force-reinstall "$(pip freeze | grep -i '^opencv-python-headless==')"


FROM cuda-python AS cuda
RUN groupadd --system --gid 10001 facerecon \
 && useradd --system --uid 10001 --gid facerecon --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin facerecon
COPY --from=cuda-build /opt/venv /opt/venv
COPY weights/ /opt/facerecon/weights/
# NVIDIA_* tell the container toolkit to mount the driver's compute libraries (CUDA 13.0
# needs driver >= 580); the base image sets them too, they are repeated to be explicit.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    FACERECON_WEIGHTS=/opt/facerecon/weights/facerecon.pt
RUN python -c "import cv2, torch, facerecon.server"
USER 10001:10001
WORKDIR /opt/facerecon
EXPOSE 50051 9464
ENTRYPOINT ["facerecon", "serve"]
