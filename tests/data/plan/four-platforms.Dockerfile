# syntax=docker/dockerfile:1
ARG DEBIAN=debian:bookworm-slim

# Neutral: pinned to the build machine, uses no TARGET* value -> once.
FROM --platform=$BUILDPLATFORM ${DEBIAN} AS assets
WORKDIR /assets
COPY site/ ./
RUN gzip -k -9 *.html

# Cross-compiles: pinned, but declares TARGETARCH -> once per target, all native.
FROM --platform=$BUILDPLATFORM golang:1.22 AS build
ARG TARGETOS TARGETARCH TARGETVARIANT
WORKDIR /src
RUN --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH GOARM=${TARGETVARIANT#v} go build -o /out/app .

FROM ${DEBIAN}
RUN uname -m > /machine && dpkg --print-architecture > /arch
COPY --from=assets /assets /srv/www
COPY --from=build /out/app /usr/local/bin/app
ENTRYPOINT ["/usr/local/bin/app"]
