"""Builders and their nodes: other machines (reached over SSH, on the model of `podman farm`)
that build the platforms they run natively. A node runs `polyarch worker` for the length of one
build, speaking `protocol` on its stdin and stdout; credentials never leave this machine."""
