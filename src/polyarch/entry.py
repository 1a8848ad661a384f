"""The `polyarch` command's entry point: an ordinary user's build enters its user namespace
(polyarch.runtime.userns) before the CLI is imported, so the command's start is paid once."""

from __future__ import annotations

import contextlib
import sys
from typing import NoReturn


def main() -> NoReturn:
    from polyarch.runtime import userns  # noqa: PLC0415 (light: before the CLI)

    if userns.needed(sys.argv[1:]):
        # When it cannot be entered, the CLI tries again and reports why as every error.
        with contextlib.suppress(userns.RootlessError):
            userns.enter([sys.executable, "-m", "polyarch", *sys.argv[1:]])
    from polyarch.cli import main as cli_main  # noqa: PLC0415

    cli_main()
