FROM alpine
CMD ["printf", "a\tb\n", "\u00e9", "quote\"d"]
