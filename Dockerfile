# One image for every Leyline service: `docker run IMAGE sink|controller|worker|...`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, in its own layer, from the CPU index by default: PyPI's Linux wheel bundles
# CUDA (several GB). The GPU override builds with TORCH_INDEX_URL pointing at a CUDA index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY leyline ./leyline
COPY bus ./bus
COPY services ./services
# The image runs every service, so it installs the worker and controller extras. Importing
# leyline.kernels and services.controller compiles numba's kernels (~5 s each) into a cache
# the service user owns (numba only reads a cache directory it can also write), so a
# container starts without compiling.
ENV NUMBA_CACHE_DIR=/var/cache/leyline-numba
RUN pip install ".[worker,controller]" && rm -rf /src \
    && cd / && python -c "import leyline.kernels, services.controller"

# Named volumes mounted on /data inherit this ownership, so the non-root user can write there.
RUN useradd --create-home --uid 10001 leyline \
    && mkdir /data \
    && chown leyline:leyline /data \
    && chown -R leyline:leyline "${NUMBA_CACHE_DIR}"
USER leyline
WORKDIR /data

ENTRYPOINT ["leyline"]
CMD ["--help"]
