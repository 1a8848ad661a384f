ARG GLOBAL
FROM alpine
ARG user1
ARG buildno=1
ARG CONT_IMG_VER
ARG a b=2 c="three"
RUN echo $user1 $buildno
