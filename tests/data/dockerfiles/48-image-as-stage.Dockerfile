FROM nginx/nginx-prometheus-exporter:0.9.0 AS exporter
FROM nginx:1.20.1-alpine
COPY --from=exporter /usr/bin/nginx-prometheus-exporter /usr/bin
COPY --from=nginx/nginx-prometheus-exporter:0.9.0 /usr/bin/nginx-prometheus-exporter /usr/bin/b
