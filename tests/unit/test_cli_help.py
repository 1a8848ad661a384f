"""Every command shows an example, every option says what it does."""

from __future__ import annotations

import click

from polyarch.cli import cli

NOT_FOR_PEOPLE = {"worker"}  # started by a build over SSH


def commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            out += commands(command, f"{path} ")
            if command.invoke_without_command:
                out.append((path, command))
        else:
            out.append((path, command))
    return out


def test_every_command_has_an_example_and_every_option_help() -> None:
    missing = []
    for path, command in commands(cli):
        if path in NOT_FOR_PEOPLE:
            continue
        with click.Context(command, info_name=path) as ctx:
            if "Example" not in command.get_help(ctx):
                missing.append(f"{path}: no example")
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and not param.help:
                missing.append(f"{path}: {param.opts[0]} has no help")
    assert missing == []
