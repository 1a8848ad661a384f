FROM alpine
RUN ["echo", "exec form"]
CMD ["nginx", "-g", "daemon off;"]
ENTRYPOINT ["/entrypoint.sh"]
SHELL ["/bin/bash", "-c"]
