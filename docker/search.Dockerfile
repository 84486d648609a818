# The search service (state lives in /data; vectors in OpenSearch or the embedded index).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY embedder_service embedder_service
COPY search_service search_service
COPY facesearch_common facesearch_common
RUN pip install --no-cache-dir ".[cpu]"
ENV SEARCH_HOST=0.0.0.0 SEARCH_PORT=8000 DATA_DIR=/data
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["python3", "-m", "search_service"]
