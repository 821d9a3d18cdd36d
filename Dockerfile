# Pilotlight image: one image for every role (api, scheduler, worker, migrate).
#   docker build -t pilotlight .
#   docker run --rm -e PILOTLIGHT_DATABASE_URL=postgresql://... pilotlight             # api
#   docker run --rm -e PILOTLIGHT_DATABASE_URL=postgresql://... pilotlight pilotlight worker
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

RUN groupadd --system --gid 10001 pilotlight \
    && useradd --system --uid 10001 --gid pilotlight --home-dir /srv/pilotlight \
       --no-create-home --shell /usr/sbin/nologin pilotlight

WORKDIR /srv/pilotlight
COPY . /srv/pilotlight

# Editable install: `pilotlight migrate` finds migrations/ next to the app package,
# so the code must stay in /srv/pilotlight rather than move into site-packages.
RUN pip install --no-cache-dir -e . \
    && mkdir -p /srv/pilotlight/data \
    && chown pilotlight:pilotlight /srv/pilotlight/data

USER pilotlight

ENV PILOTLIGHT_HOST=0.0.0.0
EXPOSE 8000

# Liveness of the api role (the other roles serve no HTTP; docker-compose.yml turns
# this check off for them).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PILOTLIGHT_PORT', '8000'), timeout=4)"]

CMD ["pilotlight", "api"]
