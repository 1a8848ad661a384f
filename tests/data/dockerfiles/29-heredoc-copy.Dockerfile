FROM alpine
COPY <<EOF /etc/motd
hello $USER
EOF
