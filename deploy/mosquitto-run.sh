#!/bin/sh
# Mosquitto as the compose stack runs it: the configuration `mosquitto_config` wrote into the
# broker volume, and a reload (SIGHUP: new CRL and ACL) whenever the portal writes a new reload
# request there (BROKER_RELOAD_COMMAND). A file, not a signal, because the portal runs in other
# containers; the portal then waits until the broker refuses its revoked canary.
set -eu
config=${MOSQUITTO_CONFIG:-/srv/broker/mosquitto.conf}
request=${RELOAD_REQUEST:-/srv/broker/reload-request}

mosquitto -c "$config" &
broker=$!
trap 'kill -TERM "$broker" 2>/dev/null; wait "$broker"; exit 0' TERM INT

last=$(cat "$request" 2>/dev/null || true)
while kill -0 "$broker" 2>/dev/null; do
    sleep 0.2
    current=$(cat "$request" 2>/dev/null || true)
    if [ "$current" != "$last" ]; then
        last=$current
        kill -HUP "$broker"
    fi
done
wait "$broker"
