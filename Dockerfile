# HANet text-to-video search: one image for the API (`hanet serve`), the indexer worker
# (`hanet index run --watch`) and the migration step (`hanet db upgrade`).
#
#   docker build -t hanet-search .                                   # CPU (default)
#   docker build -t hanet-search:cuda --build-arg DEVICE=cuda .      # CUDA torch + faiss-gpu
#
# The CUDA build takes PyTorch's CUDA wheels (they bundle the CUDA runtime, so the base image
# stays the same) and swaps faiss-cpu for faiss-gpu; the host needs the NVIDIA driver and the
# NVIDIA Container Toolkit. The indexer uses the GPU (bf16) whenever torch sees one.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# ---- build: a virtual environment with the project and its dependencies ----
FROM ${PYTHON_IMAGE} AS build
ARG DEVICE=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/hanet
ENV PATH=/opt/hanet/bin:$PATH
# torch first, from PyTorch's index for the chosen device (its own layer: it is most of the image).
RUN case "$DEVICE" in \
      cpu) index="$TORCH_CPU_INDEX" ;; \
      cuda) index="$TORCH_CUDA_INDEX" ;; \
      *) echo "DEVICE must be cpu or cuda, not $DEVICE" >&2; exit 1 ;; \
    esac \
 && pip install --index-url "$index" "torch>=2.4,<=2.14.1" "torchvision>=0.19,<=0.29.1"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model ./model
COPY db ./db
COPY index ./index
COPY corpus ./corpus
COPY indexer ./indexer
COPY service ./service
COPY migrations ./migrations
# with the Milvus client (HANET_VECTOR_STORE=milvus: docker-compose's "milvus" profile)
RUN pip install ".[milvus]" \
 && if [ "$DEVICE" = cuda ]; then \
      pip uninstall -y faiss-cpu && pip install "faiss-gpu>=1.8,<2"; \
    fi \
 && python -c "import faiss, av, open_clip, torch, pymilvus; print('torch', torch.__version__, 'faiss', faiss.__version__)"

# ---- runtime: the environment, a non-root user, one data volume ----
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="hanet-search" \
      org.opencontainers.image.description="Text-to-video search with HANet on open_clip"
RUN groupadd --system --gid 10001 hanet \
 && useradd --system --uid 10001 --gid hanet --home-dir /data --shell /usr/sbin/nologin hanet \
 && mkdir -p /data && chown hanet:hanet /data
COPY --from=build /opt/hanet /opt/hanet
ENV PATH=/opt/hanet/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HANET_DATA_DIR=/data
USER hanet
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
# Liveness of the API process; compose checks /ready (model, database, index build) instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
CMD ["hanet", "serve", "--host", "0.0.0.0", "--port", "8000"]
