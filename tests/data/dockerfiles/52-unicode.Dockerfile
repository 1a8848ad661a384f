FROM alpine
LABEL maintainer="Zoë Ångström"
RUN echo "héllo wörld ✓"
