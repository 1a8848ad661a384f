FROM alpine
RUN <<EOF
echo windows line ends
EOF
