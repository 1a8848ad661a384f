"""Reading a build's own files (effects, the frontend's only ones): the Dockerfile and its
`.dockerignore`, from a context that is not trusted: never through a symlink, never a device
or a pipe, never more than a limit. What they say is parsed by the pure `dockerfile` package.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from polyarch.errors import DockerfileError
from polyarch.frontend.dockerfile import Dockerfile, ParseResult, build, parse, read_patterns
from polyarch.patterns import ignore_file_for


def read_dockerfile(path: Path) -> tuple[ParseResult, Dockerfile]:
    """Read, parse and check a Dockerfile; errors name the file and line."""
    result = parse(dockerfile_text(path), str(path))
    return result, build(result, str(path))


def dockerfile_text(path: Path) -> str:
    try:
        return read_context_file(path).decode("utf-8")  # bytes: keep \r\n as BuildKit does
    except FileNotFoundError:
        raise DockerfileError("no such file", path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise DockerfileError(f"cannot read: not UTF-8 ({exc.reason})", path=str(path)) from None
    except OSError as exc:
        raise DockerfileError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None


MAX_DOCKERFILE = 16 * 1024 * 1024


def read_context_file(path: Path, limit: int = MAX_DOCKERFILE) -> bytes:
    """A Dockerfile or ignore file: never through a symlink (a context is not trusted: it
    could point at a host secret, which an error would then show), never a device or a
    pipe, never more than `limit` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            target = path.readlink()
            raise OSError(exc.errno, f"it is a symlink (to {target}): give that file with -f"
                          ) from None  # fmt: skip
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"over {limit} bytes")
    return data


def ignore_patterns(dockerfile: Path, context: Path) -> tuple[str, ...]:
    """The build's .dockerignore patterns (`Dockerfile.dockerignore` beside the Dockerfile
    first), read as any context file is: never through a symlink."""
    for candidate in ignore_file_for(str(dockerfile), str(context)):
        path = Path(candidate)
        if path.is_file() or path.is_symlink():
            try:
                text = read_context_file(path).decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
                raise DockerfileError(f"cannot read: {reason}", path=str(path)) from None
            return read_patterns(text, str(path))
    return ()
