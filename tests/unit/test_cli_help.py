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


def test_the_top_level_help_shows_whole_descriptions_and_no_internal_command() -> None:
    from click.testing import CliRunner

    shown = CliRunner().invoke(cli, ["--help"], terminal_width=80)
    assert shown.exit_code == 0
    listed = " ".join(shown.output.split("Commands:")[1].split())
    assert "..." not in listed
    assert "that each platform's image runs (emulated where needed) and answers the HTTP " \
           "probes." in listed  # fmt: skip
    assert " worker " not in f" {listed} "


def test_global_options_are_taken_after_the_command() -> None:
    """As docker and buildx users write them: `polyarch build --insecure-registry HOST`."""
    from click.testing import CliRunner

    seen = {}

    @cli.command("probe-globals", hidden=True)
    @click.argument("words", nargs=-1)
    @click.option("--flag", is_flag=True)
    @click.pass_context
    def probe(ctx: click.Context, words: tuple[str, ...], flag: bool) -> None:
        seen["insecure"] = ctx.obj.options.insecure
        seen["timeout"] = ctx.obj.options.idle_timeout
        seen["words"] = words
        seen["flag"] = flag

    try:
        done = CliRunner().invoke(cli, [
            "--insecure-registry", "a.lan", "probe-globals", "--flag", "one",
            "--insecure-registry", "b.lan:5000", "--idle-timeout=7", "two", "--",
            "--insecure-registry", "kept",
        ])  # fmt: skip
    finally:
        del cli.commands["probe-globals"]
    assert done.exit_code == 0, done.output
    assert seen["insecure"] == ("a.lan", "b.lan:5000")
    assert seen["timeout"] == 7
    assert seen["words"] == ("one", "two", "--insecure-registry", "kept")
    assert seen["flag"] is True
