# tusingest: the ingest gateway as a container. Configuration by environment only (see the
# README's Configuration table); `tusingest serve` is the entry point.
#
#   docker build -t tusingest .
#   docker run -p 8020:8020 -v tusingest-data:/var/lib/tusingest tusingest
#
# Stage 1 builds the virtual environment; stage 2 is the slim runtime with libmagic, running as
# an unprivileged user (the mount points of compose.yaml's volumes, /staging, /keys and /data,
# belong to it, so new named volumes do too). The source tree is installed in place (/app) because the migrations and
# the status page's templates are read from beside the package.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY tusingest ./tusingest
COPY migrations ./migrations
COPY templates ./templates
RUN python -m venv /opt/tusingest \
    && /opt/tusingest/bin/pip install -e /app \
    && /opt/tusingest/bin/python -c "import tusingest.app"

FROM python:3.11-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libmagic1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/tusingest --shell /usr/sbin/nologin tusingest \
    && mkdir -p /var/lib/tusingest /staging /keys /data \
    && chown tusingest:tusingest /var/lib/tusingest /staging /keys /data
COPY --from=build /opt/tusingest /opt/tusingest
COPY --from=build /app /app
ENV PATH=/opt/tusingest/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DATA_DIR=/var/lib/tusingest \
    APP_HOST=0.0.0.0 \
    APP_PORT=8020
USER tusingest
WORKDIR /var/lib/tusingest
VOLUME ["/var/lib/tusingest"]
EXPOSE 8020
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8020/health/live', timeout=2).status != 200)"]
ENTRYPOINT ["tusingest"]
CMD ["serve"]
