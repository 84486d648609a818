# The embedder. Build arg ORT_EXTRA=gpu (with a CUDA base image) gives the onnxruntime-gpu variant;
# the default is the CPU wheel. Models are built into the image from registry-shipped weights.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG ORT_EXTRA=cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1 MODELS_DIR=/app/models
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv \
      && rm -rf /var/lib/apt/lists/*; fi
WORKDIR /app
COPY pyproject.toml README.md ./
COPY embedder_service embedder_service
COPY search_service search_service
COPY facesearch_common facesearch_common
RUN python3 -m venv /venv && /venv/bin/pip install --no-cache-dir ".[${ORT_EXTRA},build]" \
    && /venv/bin/pip install --no-cache-dir --no-deps facenet-pytorch==2.6.0 face_recognition_models==0.3.0 \
    && /venv/bin/python -m embedder_service.build --models-dir /app/models \
    && /venv/bin/pip uninstall -y facenet-pytorch face_recognition_models onnx
ENV PATH=/venv/bin:$PATH EMBEDDER_HOST=0.0.0.0 EMBEDDER_PORT=8001
EXPOSE 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8001/healthz')"
CMD ["python3", "-m", "embedder_service"]
