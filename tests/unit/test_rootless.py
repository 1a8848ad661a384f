"""Which commands enter the rootless user namespace, read before the CLI is imported."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from polyarch.cli import cli
from polyarch.runtime import userns


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["build", "."], "build"),
        (["--config", "build", "push", "x"], "push"),  # a value that looks like a command
        (["--insecure-registry=h:5000", "verify", "r"], "verify"),
        (["--idle-timeout", "5", "--authfile", "a.json", "bake"], "bake"),
        (["--help"], None),
        (["--version"], None),
        ([], None),
        (["--config", "x"], None),
    ],
)
def test_the_command_is_read_past_the_global_options(args: list[str], command: str | None) -> None:
    assert userns.command_of(args) == command


def test_the_global_options_that_take_a_value_are_the_clis() -> None:
    valued = {opt for p in cli.params if isinstance(p, click.Option) and not p.is_flag
              and not p.is_bool_flag for opt in p.opts if opt.startswith("--")}  # fmt: skip
    assert valued - {"--version", "--help"} == set(userns.GLOBAL_VALUED)


def test_every_namespaced_command_exists() -> None:
    assert isinstance(cli, click.Group)
    assert set(cli.commands) >= userns.COMMANDS


def test_ranges_are_read_by_name_or_number(tmp_path: Path) -> None:
    (tmp_path / "subuid").write_text("bob:100000:65536\n1001:200000:1000\nbad line\n")
    (tmp_path / "subgid").write_text("bob:300000:65536\n1001:400000:0\n")
    found = userns.subordinate_ranges("bob", 1000, tmp_path / "subuid", tmp_path / "subgid")
    assert found == userns.Subordinate(100000, 65536, 300000, 65536)
    # A range of 0 ids is no range.
    assert userns.subordinate_ranges("al", 1001, tmp_path / "subuid", tmp_path / "subgid") is None
    line = userns.command_line(["polyarch", "build"], found)
    assert line[:4] == ["unshare", "--map-root-user", "--map-users=100000,1,65536",
                        "--map-groups=300000,1,65536"]  # fmt: skip
