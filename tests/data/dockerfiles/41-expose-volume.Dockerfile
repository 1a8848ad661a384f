FROM alpine
EXPOSE 80/tcp
EXPOSE 80/udp 443
VOLUME /myvol
VOLUME ["/data", "/logs"]
