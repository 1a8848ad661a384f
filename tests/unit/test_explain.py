"""Why a step ran (solver.explain) and what differs between two images (layers.compare): the
pure parts, case by case."""

from __future__ import annotations

from typing import Any

from polyarch.layers.compare import FileInfo, compare_configs, compare_files, filesystem
from polyarch.solver.explain import BuildRecord, Explainer, StepRecord, cause

RUN = {"type": "exec", "argv": ["/bin/sh", "-c", "make"], "env": ["PATH=/bin", "MODE=fast"],
       "cwd": "/src", "user": "", "mounts": [], "network": "default",
       "security": "sandbox"}  # fmt: skip
COPY = {"type": "file", "actions": [{"action": "copy", "input": 1, "sources": ["src/"],
                                     "dest": "/src/", "chown": "", "chmod": ""}]}  # fmt: skip
BASE = {"kind": "image", "key": "image:sha256:aaa", "ref": "debian:12", "digest": "sha256:aaa"}
CONTEXT = {"kind": "context", "key": "context:1", "name": "context", "selects": {}}


def step(op: dict[str, Any] = RUN, *inputs: dict[str, Any], key: str = "k2",
         description: str = "RUN make") -> StepRecord:  # fmt: skip
    return StepRecord("linux/amd64 build 3", description, key, op, inputs or (BASE,))


def previous(*steps: StepRecord, contexts: dict[str, dict[str, str]] | None = None,
             build_args: frozenset[str] = frozenset()) -> BuildRecord:  # fmt: skip
    return BuildRecord({s.ident: s for s in steps}, contexts or {}, build_args)


def with_env(*env: str) -> dict[str, Any]:
    return {**RUN, "env": list(env)}


def test_without_an_earlier_build_or_step_or_with_the_same_key() -> None:
    assert cause(None, step()) == "no earlier build of this target to compare with"
    other = StepRecord("linux/amd64 build 9", "RUN x", "k", RUN, (BASE,))
    assert cause(previous(other), step()).startswith("a new step")
    assert cause(previous(step(key="k2")), step(key="k2")).startswith("its cache entry is gone")


def test_the_instruction_and_its_resolved_options() -> None:
    before = previous(step(key="k1"))
    assert cause(before, step(description="RUN make all")) == (
        "the instruction changed: `RUN make` → `RUN make all`"
    )
    assert cause(before, step({**RUN, "cwd": "/app"})) == "WORKDIR changed: /src → /app"
    assert cause(before, step({**RUN, "user": "node"})) == "USER changed: (none) → node"
    assert cause(before, step({**RUN, "network": "none"})) == (
        "the network (--network) changed: default → none"
    )


def test_variables_name_the_build_argument() -> None:
    before = previous(step(key="k1"), build_args=frozenset({"MODE"}))
    assert cause(before, step(with_env("PATH=/bin", "MODE=slow")), ["MODE"]) == (
        "build argument MODE changed"
    )
    assert cause(before, step(with_env("PATH=/bin")), []) == "build argument MODE was unset"
    plain = previous(step(key="k1"))
    assert cause(plain, step(with_env("PATH=/usr/bin", "MODE=fast"))) == (
        "variable PATH (ENV or ARG) changed"
    )
    assert cause(plain, step(with_env("PATH=/bin", "MODE=fast", "NEW=1"))) == (
        "variable NEW (ENV or ARG) was set"
    )


def test_mounts_cache_ids_and_secret_ids() -> None:
    cache = {"type": "cache", "target": "/root/.npm", "id": "npm", "sharing": "shared"}
    secret = {"type": "secret", "id": "token", "target": "/run/secrets/token", "env": ""}
    before = previous(step({**RUN, "mounts": [cache, secret]}, key="k1"))
    assert cause(before, step({**RUN, "mounts": [{**cache, "id": "npm2"}, secret]})) == (
        "the cache mount at /root/.npm changed id: 'npm' → 'npm2'"
    )
    assert cause(before, step({**RUN, "mounts": [cache, {**secret, "id": "t2"}]})) == (
        "the secret mount at /run/secrets/token changed id: 'token' → 't2'"
    )
    assert cause(before, step({**RUN, "mounts": [cache, {**secret, "mode": 0o440}]})) == (
        "the secret mount at /run/secrets/token changed: mode"
    )
    assert cause(before, step({**RUN, "mounts": [cache]})) == (
        "the --mount=type=secret at /run/secrets/token was removed"
    )


def test_inputs_parent_step_base_image_and_context_files() -> None:
    parent = {"kind": "step", "key": "p1", "description": "RUN apt-get update",
              "where": "build 2/5"}  # fmt: skip
    before = previous(step(RUN, parent, key="k1"))
    assert cause(before, step(RUN, {**parent, "key": "p2"})) == (
        "the step it builds on changed: `RUN apt-get update` (build 2/5)"
    )
    moved = previous(step(RUN, BASE, key="k1"))
    assert cause(moved, step(RUN, {**BASE, "key": "image:sha256:bbb", "digest": "sha256:bbb"})) == (
        "the image debian:12 moved: sha256:aaa → sha256:bbb"
    )
    files = {"src": "d 0755 0:0 -", "src/a.js": "f 0644 0:0 aaaa", "src/b.js": "f 0644 0:0 bbbb"}
    old = previous(step(COPY, BASE, CONTEXT, key="k1", description="COPY src/ /src/"),
                   contexts={"context:1": files})  # fmt: skip
    new_context = {**CONTEXT, "key": "context:2"}

    def why(now: dict[str, str]) -> str:
        return cause(old, step(COPY, BASE, new_context, description="COPY src/ /src/"), [],
                     {"context:2": now})  # fmt: skip

    assert why({**files, "src/b.js": "f 0644 0:0 cccc"}) == "context file src/b.js was edited"
    assert why({**files, "src/c.js": "f 0644 0:0 cccc"}) == "context file src/c.js was added"
    assert why({k: v for k, v in files.items() if k != "src/a.js"}) == (
        "context file src/a.js was removed"
    )
    assert why({**files, "src/a.js": "f 0755 0:0 aaaa"}) == (
        "context file src/a.js changed mode: 0644 → 0755"
    )
    assert why({**files, "src/a.js": "f 0644 1000:1000 aaaa"}) == (
        "context file src/a.js changed owner: 0:0 → 1000:1000"
    )
    assert why({**files, "src/a.js": "l 0777 0:0 b.js"}) == "context file src/a.js became a symlink"


def test_the_explainer_reads_the_last_record_only_when_a_step_runs() -> None:
    loads = []

    def load() -> BuildRecord | None:
        loads.append(1)
        return previous(step(key="k1"))

    explainer = Explainer(load)
    explainer.add(step(key="k1"), {})
    assert loads == []
    assert explainer.why(step(description="RUN make all"), {}).startswith("the instruction")
    assert explainer.why(step(description="RUN make all"), {}) and loads == [1]
    round_trip = BuildRecord.from_json(explainer.record().to_json())
    assert round_trip == explainer.record()
    assert BuildRecord.from_json({"version": 99}) is None


def entry(path: str, kind: Any = "file", **fields: Any) -> FileInfo:
    return FileInfo(path, kind, **fields)


def test_whiteouts_opaque_directories_and_hardlinks() -> None:
    lower = [entry("etc", "dir", mode=0o755), entry("etc/a", digest="A"),
             entry("etc/b", digest="B"), entry("opt", "dir"), entry("opt/x", digest="X"),
             entry("var", "dir"), entry("var/keep", digest="K")]  # fmt: skip
    upper = [entry("etc/.wh.a", "whiteout"), entry("opt", "dir"),
             entry("opt/new", digest="N"), entry("opt/.wh..wh..opq", "opaque"),
             entry("var", digest="V", size=1),  # a file over a directory
             entry("link", "hardlink", link="etc/b")]  # fmt: skip
    tree = filesystem([lower, upper])
    assert sorted(tree) == ["etc", "etc/b", "link", "opt", "opt/new", "var"]
    assert tree["link"].digest == "B" and tree["var"].kind == "file"


def test_file_and_config_differences() -> None:
    a = {"x": entry("x", digest="1", size=1, mtime=10), "d": entry("d", "dir", size=0),
         "gone": entry("gone")}  # fmt: skip
    b = {"x": entry("x", digest="1", size=1, mtime=20), "d": entry("d", "dir", size=4096),
         "new": entry("new", mode=0o644)}  # fmt: skip
    changes = {c.path: c for c in compare_files(a, b)}
    assert set(changes) == {"x", "gone", "new"}
    assert changes["x"].fields == ("mtime",)
    assert (changes["gone"].change, changes["new"].change) == ("removed", "added")
    config_a = {"created": "2023", "config": {"Env": ["A=1"], "Cmd": ["x"]},
                "history": [{"created": "2023", "created_by": "RUN x"}],
                "rootfs": {"a": 1}}  # fmt: skip
    config_b = {"created": "2024", "config": {"Env": ["A=2"], "Cmd": ["x"]},
                "history": [{"created": "2024", "created_by": "RUN x"}],
                "rootfs": {"a": 2}}  # fmt: skip
    assert [c.field for c in compare_configs(config_a, config_b)] == [
        "created", "config.Env", "history[0].created"]  # fmt: skip
