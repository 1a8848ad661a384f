"""Messages a user can act on, for what goes wrong before a registry answers."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.unit.test_cli_frontend import polyarch


def test_a_refused_connection_asks_whether_a_registry_listens() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = polyarch("inspect", f"127.0.0.1:{port}/team/app:1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"(is a registry listening on 127.0.0.1:{port}?)" in result.stderr


def test_push_and_verify_without_a_name_say_what_they_take(tmp_path: Path) -> None:
    push = polyarch("push", cwd=tmp_path)
    assert push.returncode == 2 and "give NAME" in push.stderr and "-t" not in push.stderr
    verify = polyarch("verify", cwd=tmp_path)
    assert verify.returncode == 2 and "give REF" in verify.stderr and "-t" not in verify.stderr
