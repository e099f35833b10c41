# The portal's images, for docker-compose.yml (see README "Production").
#   app    (default): gunicorn, Celery worker and beat, and the one-shot init job
#   broker          : Mosquitto running the configuration the portal generates

FROM eclipse-mosquitto:2.0 AS broker
COPY --chmod=0755 deploy/mosquitto-run.sh /usr/local/bin/mosquitto-run.sh
# The portal's user id: the broker reads the files the portal writes (its key is 0600).
USER 10001:10001
CMD ["/usr/local/bin/mosquitto-run.sh"]


FROM python:3.11-slim AS app
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app

# Dependencies first: this layer is rebuilt only when the pins change. Every runtime
# dependency ships a wheel (psycopg's binary build brings libpq), so no compiler is needed.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY --chown=root:root . .

ENV DJANGO_SETTINGS_MODULE=onboarding.settings \
    DATA_DIR=/srv/data \
    CA_ROOT_PATH=/srv/ca \
    STATIC_ROOT=/app/staticfiles \
    STATIC_MANIFEST=true \
    LOG_FORMAT=json

# Static files with hashed names, compressed, inside the image (served by WhiteNoise). The
# throw-away secrets exist only for this build step; no CA or database is touched.
RUN SECRET_KEY=collectstatic-only CA_KEY_PASSPHRASE_REQUIRED=false DATA_DIR=/tmp/build \
    python manage.py collectstatic --no-input --verbosity 0 \
    && rm -rf /tmp/build

# Named volumes start as copies of these directories, owner and mode included: the CA's
# directory is 0700 from the first start, as the key store demands.
RUN install -d -o app -g app -m 0700 /srv/data /srv/ca /srv/beat \
    && install -d -o app -g app -m 0755 /srv/broker /srv/proxy

USER app
EXPOSE 8000
CMD ["gunicorn", "--config", "deploy/gunicorn_config.py", "onboarding.wsgi"]
