FROM alpine
ENV FOO=bar
RUN <<'EOT' bash
  echo "$FOO"
EOT
RUN <<"EOT" bash
  echo "$FOO"
EOT
