"""Where a built image goes besides the local store: typed outputs (`outputs`), archives for
docker and OCI tools (`docker_archive`), the final stage's files (`rootfs`), the local engine
(`engine`), and layers in another compression (`recompress`)."""
