FROM alpine AS first
RUN echo 1 > /one
FROM alpine
COPY --from=0 /one /one
COPY --from=first /one /two
