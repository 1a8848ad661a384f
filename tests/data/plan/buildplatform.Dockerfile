# The seed's shape, with the JS builds pinned to the build machine as BuildKit users do.
ARG NODE=node:20-bookworm
FROM --platform=$BUILDPLATFORM ${NODE} AS builder-header
WORKDIR /app
COPY the-header/package.json the-header/yarn.lock ./
RUN yarn install --frozen-lockfile
COPY the-header/ ./
RUN yarn run build:lib && yarn run build:lib:inline

FROM --platform=$BUILDPLATFORM ${NODE} AS builder-ram
ARG TARGETARCH
WORKDIR /app
COPY ram/package.json ram/yarn.lock ./
RUN yarn install
COPY ram/ ./
RUN echo building for $TARGETARCH && yarn run build

FROM nginx/nginx-prometheus-exporter:0.9.0 AS exporter

FROM alpine AS unused
RUN echo never

FROM nginx:1.20.1-alpine
LABEL io.daocloud.system=build-in
COPY --from=builder-ram /app/dist /usr/share/nginx/ram
COPY --from=builder-header /app/dist /usr/share/nginx/header
COPY --from=exporter /usr/bin/nginx-prometheus-exporter /usr/bin
RUN echo $TARGETARCH > /arch && apk add gettext bash
EXPOSE 80 81 82
