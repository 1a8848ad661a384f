FROM ubuntu
ARG CONT_IMG_VER
ENV CONT_IMG_VER=${CONT_IMG_VER:-v1.0.0}
RUN echo $CONT_IMG_VER
ENV abc=hello
ENV abc=bye def=$abc
ENV ghi=$abc
