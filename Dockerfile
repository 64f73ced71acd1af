# MLOps bot: Microsoft Teams bot for Azure Machine Learning (aiohttp, port 3978 by default).
#
#   docker build -t mlops-bot .
#   podman build --format docker -t mlops-bot .    # podman's default OCI format drops HEALTHCHECK
#   docker run -p 3978:3978 -v mlops-data:/data \
#     -e MicrosoftAppId=... -e MicrosoftAppPassword=... -e MicrosoftAppTenantId=... mlops-bot
#
# The container listens on 0.0.0.0, a non-loopback address, so the bot requires
# MicrosoftAppId (and its credentials): it refuses to start without it. An empty app id
# is accepted only for the local backend on a loopback address (Agents Playground).
#
# Another port: set MLOPSBOT_PORT (e.g. -e MLOPSBOT_PORT=8080 -p 8080:8080); the server and
# the health check both read it. Do not pass `serve --port`: the health check would not know.

# ---- build: install the package and its dependencies into a virtual environment
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# pyproject declares readme = "README.md", so the build needs it.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
COPY adapters ./adapters
COPY manifest ./manifest
# A regular (not editable) install: the runtime image needs the venv only, not this source tree.
RUN python -m venv /opt/mlops-bot \
 && /opt/mlops-bot/bin/pip install --no-cache-dir .

# ---- runtime: the venv, an unprivileged user, a data volume; no source tree, no build tools
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/mlops-bot/bin:$PATH \
    MLOPSBOT_HOST=0.0.0.0 \
    MLOPSBOT_PORT=3978 \
    MLOPSBOT_DATA_DIR=/data

# Unprivileged runtime user with a home (Azure credential caches live there).
RUN groupadd --system --gid 10001 mlopsbot \
 && useradd --system --uid 10001 --gid mlopsbot --create-home --home-dir /home/mlopsbot \
            --shell /usr/sbin/nologin mlopsbot

COPY --from=build /opt/mlops-bot /opt/mlops-bot

# State (SQLite database, local workspace) lives on a volume owned by the runtime user.
RUN mkdir -p /data && chown mlopsbot:mlopsbot /data
VOLUME /data

USER mlopsbot
WORKDIR /home/mlopsbot
EXPOSE 3978

# python:3.11-slim has no curl; probe /healthz with the standard library, on MLOPSBOT_PORT.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = int(os.environ.get('MLOPSBOT_PORT') or 3978); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]

# Host, port and data directory come from the MLOPSBOT_* variables above.
CMD ["mlops-bot", "serve"]
