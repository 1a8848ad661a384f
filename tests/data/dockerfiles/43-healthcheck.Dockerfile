FROM nginx
HEALTHCHECK --interval=5m --timeout=3s --start-period=1s --start-interval=2s --retries=3 \
  CMD curl -f http://localhost/ || exit 1
