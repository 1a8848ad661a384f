FROM alpine
RUN <<-EOF
	echo tabbed
		echo deeper
	EOF
