FROM --platform=$BUILDPLATFORM golang:1.21 AS build
ARG TARGETOS TARGETARCH
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/app .
FROM alpine
COPY --from=build /out/app /app
