FROM alpine
ONBUILD RUN ["echo", "trigger"]
ONBUILD ENTRYPOINT ["/x"]
