FROM nginx
HEALTHCHECK CMD ["curl", "-f", "http://localhost/"]
FROM alpine
HEALTHCHECK NONE
