FROM golang
RUN --mount=type=bind,source=.,target=/src \
    --mount=type=cache,target=/root/.cache/go-build \
    go build ./...
