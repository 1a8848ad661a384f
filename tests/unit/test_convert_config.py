"""The converter resolves image configs and history as BuildKit writes them (pure)."""

from __future__ import annotations

import pytest

from polyarch.errors import DockerfileError
from polyarch.frontend.convert import BaseImage, ConvertRequest, convert
from polyarch.frontend.dockerfile import load
from polyarch.graph.model import BuildGraph, ImageSpec
from polyarch.graph.ops import Copy, FileOp, Mkdir, Mkfile
from polyarch.oci.config import Healthcheck, HistoryEntry, ImageConfig
from polyarch.platform import Platform

AMD64 = Platform.parse("linux/amd64")
ARM64 = Platform.parse("linux/arm64")
BASE = "docker.io/library/debian:latest"


def base_config(**fields: object) -> ImageConfig:
    defaults: dict[str, object] = {
        "env": ("PATH=/bin", "A=1"),
        "cmd": ("bash",),
        "history": (HistoryEntry("2020-01-01T00:00:00Z", "base layer"),),
    }
    defaults.update(fields)
    return ImageConfig("linux", "amd64", **defaults)  # type: ignore[arg-type]


def graph(text: str, *, config: ImageConfig | None = None, **kw: object) -> BuildGraph:
    images = {(BASE, "linux/amd64"): BaseImage("sha256:" + "1" * 64, config or base_config())}
    request = ConvertRequest(load(text), (AMD64,), AMD64, images=images, **kw)  # type: ignore[arg-type]
    return convert(request)


def spec(text: str, **kw: object) -> ImageSpec:
    return graph(text, **kw).images[AMD64]


def history(s: ImageSpec) -> list[str]:
    return [step.created_by for step in s.steps]


def test_env_keeps_declaration_order_and_replaces_in_place() -> None:
    s = spec("FROM debian\nENV Z=1 PATH=/x:$PATH\n")
    assert s.config.env == ("PATH=/x:/bin", "A=1", "Z=1")  # as BuildKit's addEnv
    assert history(s) == ["ENV Z=1 PATH=/x:/bin"]


def test_shell_form_uses_the_current_shell() -> None:
    s = spec('FROM debian\nSHELL ["/bin/bash", "-c"]\nCMD echo hi\n')
    assert s.config.cmd == ("/bin/bash", "-c", "echo hi")
    assert history(s) == ["SHELL [/bin/bash -c]", 'CMD ["/bin/bash" "-c" "echo hi"]']
    assert s.config.args_escaped


def test_entrypoint_resets_a_cmd_not_set_in_its_stage() -> None:
    inherited = spec('FROM debian\nENTRYPOINT ["/e"]\n')
    assert inherited.config.cmd is None and inherited.config.entrypoint == ("/e",)
    same_stage = spec('FROM debian\nCMD ["x"]\nENTRYPOINT ["/e"]\n')
    assert same_stage.config.cmd == ("x",)
    from_stage = spec('FROM debian AS parent\nCMD ["x"]\nFROM parent\nENTRYPOINT ["/e"]\n')
    assert from_stage.config.cmd is None  # BuildKit resets it here too


def test_healthcheck_expose_and_history_texts() -> None:
    s = spec(
        "FROM debian\nHEALTHCHECK --interval=1m30s --retries=3 CMD curl x\nEXPOSE 80 53/udp\n"
        "VOLUME /data\nSTOPSIGNAL SIGTERM\nUSER nobody\nLABEL a=b\n"
    )
    assert s.config.healthcheck == Healthcheck(("CMD-SHELL", "curl x"), 90_000_000_000,
                                               retries=3)  # fmt: skip
    assert s.config.exposed_ports == ("53/udp", "80/tcp")
    assert history(s) == [
        "HEALTHCHECK {Test:[CMD-SHELL curl x] Interval:1m30s Timeout:0s StartPeriod:0s "
        "StartInterval:0s Retries:3}",
        "EXPOSE [53/udp 80/tcp]",
        "VOLUME [/data]",
        "STOPSIGNAL SIGTERM",
        "USER nobody",
        "LABEL a=b",
    ]
    doc = s.config.to_bytes().decode()
    assert doc.startswith('{"architecture":"amd64","os":"linux","config":{"User":"nobody",')


@pytest.mark.parametrize("value", ["500us", "999us", "1ns"])
def test_healthcheck_durations_under_a_millisecond_are_refused(value: str) -> None:
    with pytest.raises(DockerfileError, match=r"Dockerfile:2: .*cannot be less than 1ms"):
        load(f"FROM debian\nHEALTHCHECK --interval={value} CMD true\n")


def test_scratch_starts_from_buildkits_empty_image() -> None:
    s = spec("FROM scratch\nCOPY a /a\n")
    assert s.config.working_dir == "/"
    assert s.config.env == ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)


def test_a_base_without_path_gets_the_default() -> None:
    s = spec("FROM debian\n", config=base_config(env=("A=1",)))
    assert s.config.env[-1].startswith("PATH=/usr/local/sbin")


def test_copy_heredoc_expands_args_and_env() -> None:
    g = graph('FROM debian\nARG FOO=bar\nENV E=env\nCOPY <<EOF /x\nhello $FOO $E "q"\nEOF\n')
    files = [
        a for v in g.vertices.values() if isinstance(v.op, FileOp)
        for a in v.op.actions if isinstance(a, Mkfile)
    ]  # fmt: skip
    assert [f.data for f in files] == ['hello bar env "q"\n']  # quotes kept (BuildKit's raw)
    quoted = graph("FROM debian\nARG FOO=bar\nCOPY <<'EOF' /x\nhello $FOO\nEOF\n")
    [doc] = [
        a for v in quoted.vertices.values() if isinstance(v.op, FileOp)
        for a in v.op.actions if isinstance(a, Mkfile)
    ]  # fmt: skip
    assert doc.data == "hello $FOO\n"


def test_workdir_is_made_with_the_stage_user() -> None:
    g = graph("FROM debian\nUSER app\nWORKDIR /srv/app\n")
    [mkdir] = [
        a for v in g.vertices.values() if isinstance(v.op, FileOp)
        for a in v.op.actions if isinstance(a, Mkdir)
    ]  # fmt: skip
    assert mkdir == Mkdir("/srv/app", 0o755, "app")
    assert history(g.images[AMD64]) == ["USER app", "WORKDIR /srv/app"]


def test_run_history_names_the_stage_args() -> None:
    s = spec("FROM debian\nARG A=1\nARG B\nRUN echo hi\n", build_args={"B": "two"})
    assert history(s) == ["ARG A=1", "ARG B=two", "RUN |2 A=1 B=two /bin/sh -c echo hi # buildkit"]


def test_copy_history_as_buildkit() -> None:
    s = spec("FROM debian\nCOPY --chown=1:2 --chmod=644 a b /dst/\n")
    assert history(s) == ["COPY --chown=1:2 --chmod=644 a b /dst/ # buildkit"]


def test_copy_from_takes_no_variables() -> None:
    with pytest.raises(DockerfileError, match="variable expansion is not supported for --from"):
        graph("FROM debian AS a\nFROM debian\nARG S=a\nCOPY --from=$S /x /y\n")


def test_image_claims_the_target_platform() -> None:
    text = "FROM --platform=$BUILDPLATFORM debian\nRUN true\n"
    images = {(BASE, "linux/amd64"): BaseImage("sha256:" + "1" * 64, base_config())}
    g = convert(ConvertRequest(load(text), (ARM64,), AMD64, images=images))
    assert g.images[ARM64].config.architecture == "arm64"  # as BuildKit's finalizeResultImage


def test_target_stage_arg() -> None:
    g = graph("FROM debian AS base\nARG TARGETSTAGE\nRUN echo $TARGETSTAGE\nFROM base AS foo\n",
              target="foo")  # fmt: skip
    [run] = [v for v in g.vertices.values() if v.kind == "exec"]
    assert "TARGETSTAGE=foo" in run.op.env  # type: ignore[union-attr]


def test_link_copies_are_made_on_nothing_and_merged() -> None:
    g = graph("FROM debian\nRUN true\nCOPY --link a /a\n")
    merge = g.vertices[g.images[AMD64].result]
    assert merge.kind == "merge"
    copy = g.vertices[merge.inputs[1]]
    assert isinstance(copy.op, FileOp) and isinstance(copy.op.actions[0], Copy)
    assert g.vertices[copy.inputs[0]].kind == "source"  # scratch, not the RUN below
    with_chmod = graph("FROM debian\nCOPY --link --chmod=600 a /a\n")
    assert with_chmod.vertices[with_chmod.images[AMD64].result].kind == "file"  # BuildKit: no link


def test_base_history_gets_one_entry_per_layer() -> None:
    d = "sha256:" + "2" * 64
    from polyarch.digest import Digest

    short = base_config(history=(), diff_ids=(Digest.parse(d), Digest.parse(d)))
    s = spec("FROM debian\nRUN true\n", config=short)
    assert [(h.created_by, h.empty_layer) for h in s.config.history] == [("", False)] * 2
    long = base_config(
        history=(HistoryEntry(None, "a"), HistoryEntry(None, "b")),
        diff_ids=(Digest.parse(d),),
    )
    s = spec("FROM debian\n", config=long)
    assert [(h.created_by, h.empty_layer) for h in s.config.history] == [("a", False),
                                                                         ("b", True)]  # fmt: skip
