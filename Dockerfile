# tusingest: the ingest gateway as a container. Configuration by environment only (see the
# README's Configuration table); `tusingest serve` is the entry point.
#
#   docker build -t tusingest .
#   docker run -p 8020:8020 -v tusingest-data:/var/lib/tusingest tusingest
#
# Stage `base` is slim Python with libmagic (python-magic loads it when the package is imported,
# so the build stage's import check needs it as much as the runtime) and the unprivileged user;
# stage `build` makes the virtual environment; the last stage is `base` plus that environment
# and the source tree, running as the user (the mount points of compose.yaml's volumes,
# /var/lib/tusingest, /staging, /keys and /data, belong to it, so new named volumes do too).
# The source tree is installed in place (/app, an editable install) because the migrations and
# the status page's templates are read from beside the package, not from site-packages.
FROM python:3.11-slim AS base
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libmagic1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tusingest \
    && useradd --system --uid 10001 --gid tusingest --home-dir /var/lib/tusingest \
        --shell /usr/sbin/nologin tusingest \
    && mkdir -p /var/lib/tusingest /staging /keys /data \
    && chown tusingest:tusingest /var/lib/tusingest /staging /keys /data

FROM base AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY tusingest ./tusingest
COPY migrations ./migrations
COPY templates ./templates
# The import check loads what `tusingest serve` loads at start (python-magic finds libmagic).
RUN python -m venv /opt/tusingest \
    && /opt/tusingest/bin/pip install -e /app \
    && /opt/tusingest/bin/python -c "import tusingest.app, tusingest.cli" \
    && /opt/tusingest/bin/tusingest --help >/dev/null

FROM base
COPY --from=build /opt/tusingest /opt/tusingest
COPY --from=build /app /app
# APP_PORT is where `tusingest serve` listens: change it at `docker run -e APP_PORT=...` and the
# healthcheck follows (it reads the variable when it runs; EXPOSE only documents the default).
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
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('APP_PORT', '').strip() or '8020'; sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=2).status != 200)"]
ENTRYPOINT ["tusingest"]
CMD ["serve"]
