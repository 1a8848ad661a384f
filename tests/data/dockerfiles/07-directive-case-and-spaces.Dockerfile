#   ESCAPE  =  `   
FROM alpine
RUN echo `
  continued
