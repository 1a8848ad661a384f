FROM alpine
COPY --from=builder -- /a /b
COPY -- --weird-name /dst
