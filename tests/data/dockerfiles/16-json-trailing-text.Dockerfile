FROM alpine
CMD ["echo", "a"] trailing words
