FROM alpine
ENV MY_NAME="John Doe"
ENV MY_DOG=Rex\ The\ Dog
ENV MY_CAT=fluffy
ENV OLD_STYLE value with spaces
ENV A=1 B=2 C="three four"
