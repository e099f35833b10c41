#!/bin/sh
# One-shot start-up job of the compose stack (service `init`): schema, CA, broker configuration.
# Each step is idempotent, so it runs on every `docker compose up`.
set -eu
python manage.py migrate --no-input
python manage.py init_ca
# The broker certificate names the public host devices dial and the stack-internal name the
# portal's health probe uses; the files land in the broker volume Mosquitto mounts read-only.
python manage.py mosquitto_config --out /srv/broker \
    --hostname "${BROKER_PUBLIC_HOST}" --hostname "${BROKER_PROBE_HOST}" --port "${BROKER_PROBE_PORT}"
