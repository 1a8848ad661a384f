"""Messages a user can act on, for what goes wrong before a registry answers."""

from __future__ import annotations

import socket

from tests.unit.test_cli_frontend import polyarch


def test_a_refused_connection_asks_whether_a_registry_listens() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = polyarch("inspect", f"127.0.0.1:{port}/team/app:1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"(is a registry listening on 127.0.0.1:{port}?)" in result.stderr
