FROM alpine
RUN echo one \
# a comment inside the continuation
    && echo two \
    # an indented comment
    && echo three
