# MLOps bot: Microsoft Teams bot for Azure Machine Learning (aiohttp on port 3978).
#
#   docker build -t mlops-bot .
#   docker run -p 3978:3978 -v mlops-data:/data \
#     -e MicrosoftAppId=... -e MicrosoftAppPassword=... -e MicrosoftAppTenantId=... mlops-bot
#
# The container listens on 0.0.0.0, a non-loopback address, so the bot requires
# MicrosoftAppId (and its credentials): it refuses to start without it. An empty app id
# is accepted only for the local backend on a loopback address (Agents Playground).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged runtime user with a home (Azure credential caches live there).
RUN groupadd --system --gid 10001 mlopsbot \
 && useradd --system --uid 10001 --gid mlopsbot --create-home --home-dir /home/mlopsbot \
            --shell /usr/sbin/nologin mlopsbot

WORKDIR /app
# pyproject declares readme = "README.md", so the build needs it.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
COPY adapters ./adapters
COPY manifest ./manifest
RUN pip install --no-cache-dir . \
 && rm -rf build *.egg-info

# State (SQLite database, local workspace) lives on a volume owned by the runtime user.
RUN mkdir -p /data && chown mlopsbot:mlopsbot /data
VOLUME /data

USER mlopsbot
WORKDIR /home/mlopsbot
EXPOSE 3978

# python:3.11-slim has no curl; probe /healthz with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:3978/healthz', timeout=4).status == 200 else 1)"]

CMD ["mlops-bot", "serve", "--host", "0.0.0.0", "--port", "3978", "--data-dir", "/data"]
