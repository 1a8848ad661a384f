# leading comment

  # indented comment
FROM alpine # not a comment on the same line

# between
RUN echo hi # stays in the command
	# tab-indented comment
