#!/bin/sh
# One-shot start-up job of the compose stack (service `init`): schema, CA, broker and proxy configuration.
# Each step is idempotent, so it runs on every `docker compose up`.
set -eu
python manage.py migrate --no-input
python manage.py init_ca
# The broker certificate names the public host devices dial and the stack-internal name the
# portal's health probe uses; the files land in the broker volume Mosquitto mounts read-only.
python manage.py mosquitto_config --out /srv/broker \
    --hostname "${BROKER_PUBLIC_HOST}" --hostname "${BROKER_PROBE_HOST}" --port "${BROKER_PROBE_PORT}"
# The TLS front (service `proxy`): a server certificate from the CA for the host of PORTAL_URL
# (kept while it is fresh), client certificates checked against the CA, requests to `web`. nginx
# runs as the portal's user with this volume read-only, so its own files go to its /tmp.
python manage.py proxy_config --out /srv/proxy --listen 8443 --upstream web:8000 \
    --run-dir /tmp --log-to-stderr
