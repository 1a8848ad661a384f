import os
from pathlib import Path

import pytest

from polyarch.cli import plan_text
from polyarch.errors import DockerfileError
from polyarch.frontend.convert import ConvertRequest, build_once_stages, convert
from polyarch.frontend.dockerfile import load
from polyarch.graph.model import BuildGraph
from polyarch.graph.ops import ExecOp
from polyarch.platform import Platform, runs_natively

AMD64 = Platform.parse("linux/amd64")
ARM64 = Platform.parse("linux/arm64")
BOTH = (AMD64, ARM64)
DATA = Path(__file__).parent.parent / "data" / "plan"


def plan(
    text: str,
    platforms: tuple[Platform, ...] = BOTH,
    *,
    args: dict[str, str] | None = None,
    target: str | None = None,
    machine: Platform = AMD64,
) -> BuildGraph:
    return convert(ConvertRequest(load(text), platforms, machine, args or {}, target))


def descriptions(p: BuildGraph, stage: str, target: Platform) -> list[str]:
    [inst] = [s for s in p.stages if s.stage == stage and target in s.targets]
    return [step.description for step in inst.steps]


def env_of(op: object) -> dict[str, str]:
    assert isinstance(op, ExecOp)
    return dict(item.split("=", 1) for item in op.env)


PINNED = """
FROM --platform=$BUILDPLATFORM node:20 AS js
WORKDIR /app
COPY package.json yarn.lock ./
RUN yarn install
COPY . .
RUN yarn build
FROM nginx:alpine
COPY --from=js /app/dist /usr/share/nginx/html
RUN apk add gettext
"""


def test_pinned_neutral_stage_is_planned_once() -> None:
    p = plan(PINNED)
    js = [s for s in p.stages if s.stage == "js"]
    assert len(js) == 1 and js[0].targets == BOTH and js[0].platform == AMD64
    final = [s for s in p.stages if s.stage == "stage-1"]
    assert [s.targets for s in final] == [(AMD64,), (ARM64,)]
    # The arm64 image's RUN runs under emulation on an amd64 machine, nothing else does.
    emulated = [v.description for v in p.vertices.values() if v.emulated]
    assert emulated == ["RUN apk add gettext"]
    # Both final stages copy the very same vertex's output.
    js_result = js[0].result
    assert all(any(js_result in p.vertices[k].inputs for k in s.vertices) for s in final)


def test_declaring_a_target_arg_splits_the_stage() -> None:
    p = plan(PINNED.replace("WORKDIR /app", "ARG TARGETARCH\nWORKDIR /app"))
    js = [s for s in p.stages if s.stage == "js"]
    assert [s.targets for s in js] == [(AMD64,), (ARM64,)]
    assert all(s.platform == AMD64 for s in js)  # still on the build machine
    assert js[0].vertices[:3] == js[1].vertices[:3]  # FROM, WORKDIR, COPY shared; RUNs differ
    assert js[0].vertices[3] != js[1].vertices[3]


def test_unpinned_stage_runs_per_platform_under_emulation() -> None:
    p = plan("FROM alpine\nRUN echo hi\n")
    runs = sorted((str(v.platform), v.emulated) for v in p.vertices.values() if v.kind == "exec")
    assert runs == [("linux/amd64", False), ("linux/arm64", True)]
    on_arm = plan("FROM alpine\nRUN echo hi\n", machine=ARM64)
    assert [
        v.emulated for v in on_arm.vertices.values() if v.platform == ARM64 and v.kind == "exec"
    ] == [False]


def test_only_reachable_stages_and_unused_warning() -> None:
    p = plan("FROM alpine AS a\nRUN a\nFROM alpine AS b\nRUN b\nFROM alpine\nCOPY --from=a /x /y\n")
    assert {s.stage for s in p.stages} == {"a", "stage-2"}
    assert [str(w) for w in p.warnings] == [
        "Dockerfile:3: stage 'b' is never used: target 'stage-2' does not depend on it, so it is "
        "not built"
    ]


def test_target_selection() -> None:
    text = "FROM alpine AS a\nRUN a\nFROM a AS b\nRUN b\nFROM alpine\n"
    p = plan(text, target="b")
    assert p.target == "b" and {s.stage for s in p.stages} == {"a", "b"}
    assert plan(text, target="0").target == "a"
    with pytest.raises(DockerfileError, match="target stage 'nope' not found"):
        plan(text, target="nope")


def test_cycles_are_refused_with_the_chain() -> None:
    text = "FROM alpine AS a\nCOPY --from=b /x /y\nFROM a AS b\nRUN b\n"
    with pytest.raises(DockerfileError, match="circular dependency between stages: b -> a -> b"):
        plan(text)


def test_from_platform_on_a_stage_reference_warns() -> None:
    p = plan("FROM alpine AS base\nFROM --platform=linux/arm64 base\nRUN x\n")
    assert any(
        "--platform is ignored when FROM names another stage" in w.message for w in p.warnings
    )


def test_undeclared_target_arg_warns() -> None:
    p = plan("FROM scratch\nRUN echo $TARGETARCH\nCOPY app-${TARGETOS} /app\n")
    messages = [(w.location.start_line if w.location else None, w.message) for w in p.warnings]
    assert [m[0] for m in messages] == [2, 3]
    assert "TARGETARCH is used in stage 'stage-0' without `ARG TARGETARCH`" in messages[0][1]
    # Outside RUN's shell text it is BuildKit's UndefinedVar that says so.
    assert p.warnings[1].rule == "UndefinedVar"
    assert messages[1][1] == "Usage of undefined variable '$TARGETOS'"
    # Without the base image's config (a plan that resolves nothing) its variables are not
    # known, so UndefinedVar says nothing.
    unknown = plan("FROM alpine\nCOPY app-${TARGETOS} /app\n")
    assert not [w for w in unknown.warnings if w.rule == "UndefinedVar"]
    assert not plan("FROM alpine\nARG TARGETARCH\nRUN echo $TARGETARCH\n").warnings


def test_arg_scoping_and_precedence() -> None:
    text = (
        "ARG V=global\nARG BASE=alpine\nFROM $BASE\nWORKDIR /a/$V\nARG V\nWORKDIR /b/$V\n"
        "ARG W=stage\nWORKDIR /c/$W\nENV W=env\nWORKDIR /d/$W\n"
    )
    assert descriptions(plan(text, (AMD64,)), "stage-0", AMD64) == [
        "FROM docker.io/library/alpine:latest",
        "WORKDIR /a",  # a global ARG is not visible until redeclared
        "ARG V=global",  # redeclared without default: the global value
        "WORKDIR /b/global",
        "ARG W=stage",
        "WORKDIR /c/stage",
        "ENV W=env",
        "WORKDIR /d/env",  # a later ENV beats the ARG
    ]
    with_args = plan(text, (AMD64,), args={"V": "cli", "W": "cli", "BASE": "debian"})
    shown = descriptions(with_args, "stage-0", AMD64)
    assert shown[0] == "FROM docker.io/library/debian:latest"
    assert [shown[3], shown[5]] == ["WORKDIR /b/cli", "WORKDIR /c/cli"]


def test_platform_args_in_from_and_stage() -> None:
    text = "FROM --platform=$BUILDPLATFORM alpine AS x\nARG TARGETPLATFORM BUILDARCH\nRUN echo\n"
    p = plan(text)
    runs = [v for v in p.vertices.values() if v.kind == "exec"]
    envs = sorted(env_of(v.op)["TARGETPLATFORM"] for v in runs)
    assert envs == ["linux/amd64", "linux/arm64"]
    assert all(env_of(v.op)["BUILDARCH"] == "amd64" for v in runs)


def test_proxy_args_reach_nothing_keyed() -> None:
    text = "FROM alpine\nRUN apk add curl\n"
    plain = plan(text, (AMD64,))
    proxied = plan(text, (AMD64,), args={"HTTPS_PROXY": "http://proxy:3128"})
    assert plain.results == proxied.results
    assert not proxied.warnings  # proxy args are predefined, never "unconsumed"


def test_unconsumed_build_args_warn() -> None:
    p = plan("FROM alpine\n", (AMD64,), args={"NOPE": "1"})
    assert [w.message for w in p.warnings] == ["build arguments not consumed by any ARG: NOPE"]


def test_copy_from_an_image_is_a_source() -> None:
    p = plan("FROM alpine\nCOPY --from=nginx/nginx-prometheus-exporter:0.9.0 /bin/x /x\n", (ARM64,))
    sources = sorted(
        v.description for v in p.vertices.values() if v.kind == "source" and not v.internal
    )
    assert sources == [
        "FROM docker.io/library/alpine:latest",
        "image docker.io/nginx/nginx-prometheus-exporter:0.9.0",
    ]


def test_keys_change_only_downstream() -> None:
    before = plan("FROM alpine\nRUN a\nRUN b\nRUN c\n", (AMD64,))
    after = plan("FROM alpine\nRUN a\nRUN b\nRUN changed\n", (AMD64,))
    [b] = before.stages
    [a] = after.stages
    assert a.vertices[:3] == b.vertices[:3] and a.vertices[3] != b.vertices[3]


def test_bad_values_name_the_line() -> None:
    with pytest.raises(DockerfileError, match=r"Dockerfile:2: .*unsupported modifier"):
        plan("FROM alpine\nWORKDIR ${X!}\n")
    with pytest.raises(DockerfileError, match=r"Dockerfile:1: FROM --platform: "):
        plan("FROM --platform=linux/sparc alpine\n")
    with pytest.raises(
        DockerfileError, match=r"Dockerfile:2: base name \(\$\{NONE\}\) should not be blank"
    ):
        plan("FROM alpine\nFROM ${NONE}\n")


def test_runs_natively() -> None:
    assert runs_natively(AMD64, AMD64)
    assert runs_natively(AMD64, Platform.parse("linux/386"))
    assert not runs_natively(AMD64, ARM64)
    assert not runs_natively(ARM64, Platform.parse("linux/arm/v7"))
    # Every variant of the machine's own architecture: the kernel runs it, not an emulator.
    assert runs_natively(AMD64, Platform.parse("linux/amd64/v3"))
    assert runs_natively(ARM64, Platform.parse("linux/arm64/v9"))
    assert not runs_natively(AMD64, Platform.parse("windows/amd64"))


GOLDEN = [
    ("seed", ("linux/amd64", "linux/arm64")),
    ("buildplatform", ("linux/amd64", "linux/arm64")),
    ("four-platforms", ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x")),
]


@pytest.mark.parametrize(("name", "platforms"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_plans(name: str, platforms: tuple[str, ...]) -> None:
    text = (DATA / f"{name}.Dockerfile").read_text()
    p = convert(
        ConvertRequest(load(text, f"{name}.Dockerfile"), Platform.parse_list(platforms), AMD64)
    )
    got = plan_text(p) + "\n"
    golden = DATA / f"{name}.plan.txt"
    if os.environ.get("POLYARCH_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text()


BUILD_ONCE = """
FROM node AS js
RUN yarn build
FROM golang AS go
ARG TARGETARCH
RUN GOARCH=$TARGETARCH go build
FROM alpine AS base
RUN apk add x
FROM base AS derived
RUN echo derived
FROM --platform=$BUILDPLATFORM alpine AS pinned
RUN echo pinned
FROM alpine AS image-only
FROM alpine
COPY --from=js /dist /js
COPY --from=go /app /app
COPY --from=derived /x /x
COPY --from=pinned /p /p
COPY --from=image-only /bin/busybox /bin/
RUN true
"""


def test_build_once_candidates() -> None:
    df = load(BUILD_ONCE)
    target = df.stages[-1]
    chosen = build_once_stages(df, target, "auto", frozenset())
    # js: neutral. go: declares TARGETARCH. base: others build FROM it. pinned: runs once
    # anyway. image-only: nothing to save. The target never.
    assert {df.stages[i].display: why for i, why in chosen.items()} == {
        "js": "auto",
        "derived": "auto",
    }
    assert build_once_stages(df, target, "off", frozenset()) == {}
    assert build_once_stages(df, target, "auto", frozenset({"js"})) == {3: "auto"}
    forced = build_once_stages(df, target, frozenset({"go"}), frozenset())
    assert forced == {1: "forced"}


def test_build_once_in_the_plan() -> None:
    p = plan(BUILD_ONCE, machine=AMD64)
    js = [s for s in p.stages if s.stage == "js"]
    assert len(js) == 1 and js[0].mode == "build-once" and js[0].targets == BOTH
    assert js[0].platform == AMD64 and not any(p.vertices[k].emulated for k in js[0].vertices)
    go = [s for s in p.stages if s.stage == "go"]
    assert [s.targets for s in go] == [(AMD64,), (ARM64,)]
    off = convert(ConvertRequest(load(BUILD_ONCE), BOTH, AMD64, build_once="off"))
    assert len([s for s in off.stages if s.stage == "js"]) == 2
    # On a single native platform there is nothing to share.
    single = plan(BUILD_ONCE, (AMD64,))
    assert all(s.mode != "build-once" for s in single.stages)


def test_a_named_context_of_a_stages_name_replaces_the_stage_whole() -> None:
    """BuildKit's rule: the stage's instructions are not run, and a stage built FROM it starts
    from the context; a context named after the base image only replaces the base."""
    from polyarch.frontend.convert import NamedContext

    text = BUILD_ONCE.replace("FROM base AS derived",
                              "FROM base AS derived\nCOPY --from=js /dist /d")  # fmt: skip
    contexts = {"js": NamedContext("layout", "/srv/js-layout:stage"),
                "base": NamedContext("image", "busybox:1")}  # fmt: skip
    p = convert(ConvertRequest(load(text), BOTH, AMD64, contexts=contexts))
    for inst in p.stages:
        if inst.stage in ("js", "base"):
            assert [p.vertices[k].op.kind for k in inst.vertices] == ["image"]
    js_runs = [v for v in p.vertices.values() if isinstance(v.op, ExecOp) and "yarn" in str(v.op)]
    assert js_runs == []
    # Replaced stages are no build-once candidates (nothing runs in them).
    assert all(s.mode != "build-once" for s in p.stages if s.stage in ("js", "base"))
    derived = [s for s in p.stages if s.stage == "derived"]
    assert any("echo derived" in d for s in derived for d in (x.description for x in s.steps))
    # Named after the base image: the stage's own steps still run, on that image.
    node = {"node": NamedContext("image", "node:22")}
    by_base = convert(ConvertRequest(load(BUILD_ONCE), BOTH, AMD64, contexts=node))
    assert any("yarn build" in str(v.op) for v in by_base.vertices.values())


def test_native_detection() -> None:
    from polyarch.worker.local.native import native_kind

    assert native_kind(b"\x7fELF\x02\x01", "bin/tool") == "an ELF binary"
    assert native_kind(b"!<arch>\n", "lib/x.a") == "a static library archive"
    assert native_kind(b"\xcf\xfa\xed\xfe", "tool") == "a Mach-O binary"
    assert native_kind(b"xxxx", "node_modules/x/build/Release/addon.node") == (
        "a native module (.node)"
    )
    assert native_kind(b"xxxx", "lib/libz.so.1.2") == "a native module (.so.1.2)"
    assert native_kind(b"MZ\x90\x00", "tool.exe") == "a Windows PE binary"
    assert native_kind(b"MZ is a word", "notes.txt") is None
    assert native_kind(b"console.log", "dist/app.js") is None
    assert native_kind(b"\xca\xfe\xba\xbe", "Main.class") is None  # Java bytecode is portable


def test_plan_text_says_where_a_node_runs_each_platform() -> None:
    """With routes, the stage table and the step marks say what the Routing section says: a
    platform on a node that runs it natively is not 'emulated', one it emulates is."""
    from polyarch.nodes.builders import Node
    from polyarch.nodes.farm import Route

    p = plan("FROM debian\nRUN make\n")
    arm = Node("arm", "local", ("linux/arm64",))
    native = plan_text(p, [Route(AMD64, None, "native here"),
                           Route(ARM64, arm, "native on node arm")])  # fmt: skip
    assert "1 native on node arm" in native and "[emulated]" not in native
    assert "2 RUN steps, 0 of them under emulation" in native
    assert "stage-0 (linux/arm64, on linux/arm64, node arm):" in native
    emulated = plan_text(p, [Route(AMD64, None, "native here"),
                             Route(ARM64, arm, "emulated on node arm", native=False)])  # fmt: skip
    assert "1 emulated on node arm" in emulated and "RUN make [emulated]" in emulated
    assert "2 RUN steps, 1 of them under emulation" in emulated
    here = plan_text(p)
    assert "1 emulated (qemu-aarch64)" in here and "1 of them under emulation" in here
