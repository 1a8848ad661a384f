FROM alpine
COPY --chown=1000:1000 --chmod=0755 src/ /app/
COPY --link --from=nginx:latest /etc/nginx/nginx.conf /nginx.conf
COPY --parents ./x/a.txt ./y/a.txt /parents/
COPY --exclude=*.txt --exclude=*.md . /src/
