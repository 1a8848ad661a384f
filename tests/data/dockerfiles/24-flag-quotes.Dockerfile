FROM alpine
COPY --chown="user name" a b
LABEL --not-a-flag=x
