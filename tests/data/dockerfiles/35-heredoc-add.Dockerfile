FROM alpine
ADD <<EOF /app/config.ini
[section]
key=value
EOF
