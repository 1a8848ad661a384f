FROM alpine
RUN cat /dev/stdin 3<<A <<B
three
A
zero
B
