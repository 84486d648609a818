# syntax=docker/dockerfile:1
# The search service alone: search_service + facesearch_common, `.[search,opensearch]` (no
# embedder code, no ONNX Runtime). State lives in /data; vectors in OpenSearch, Milvus or the
# embedded index. EXTRA_EXTRAS adds extras to the install: `,milvus` for docker-compose.milvus.yml.
FROM python:3.11-slim
ARG EXTRA_EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 OPENBLAS_NUM_THREADS=1
RUN useradd --system --no-create-home --shell /usr/sbin/nologin facesearch \
    && mkdir /data && chown facesearch /data
WORKDIR /app
COPY pyproject.toml ./
COPY facesearch_common facesearch_common
COPY search_service search_service
RUN python3 -m venv /venv && /venv/bin/pip install --no-cache-dir ".[search,opensearch${EXTRA_EXTRAS}]"
USER facesearch
ENV PATH=/venv/bin:$PATH SEARCH_HOST=0.0.0.0 SEARCH_PORT=8000 DATA_DIR=/data
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz')"
# `python -m search_service` builds the app with create_app() and serves it with uvicorn
# (the same as `uvicorn search_service.main:create_app --factory`, plus the settings' host and port).
CMD ["python3", "-m", "search_service"]
