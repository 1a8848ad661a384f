FROM alpine
CMD ["a",]
RUN [not json at all
ENTRYPOINT [ "ok" ]
CMD ["unterminated"
