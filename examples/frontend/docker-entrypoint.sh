#!/bin/bash
# Fill the nginx config from the environment, start nginx, then run the Prometheus exporter in
# the foreground (it is the container's main process: if it stops, the container stops).
set -euo pipefail

export APP_PORT=${APP_PORT:-80}
export STATUS_PORT=${STATUS_PORT:-81}
export CDN_PORT=${CDN_PORT:-82}
export SERVER_NAME=${SERVER_NAME:-_}
export EXPORTER_PORT=${EXPORTER_PORT:-9113}

envsubst '${APP_PORT} ${STATUS_PORT} ${CDN_PORT} ${SERVER_NAME}' \
    < /etc/nginx/templates/default.conf.template > /etc/nginx/conf.d/default.conf
nginx -t -q
nginx

exec prometheus-nginx-exporter \
    -nginx.scrape-uri "http://127.0.0.1:${STATUS_PORT}/stub_status" \
    -nginx.retries 10 -nginx.retry-interval 1s \
    -web.listen-address ":${EXPORTER_PORT}"
