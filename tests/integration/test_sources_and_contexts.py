"""Git sources (ADD <git-url>, a git URL as the context) from a real `git daemon`, named build
contexts, the syntax directive, and SSH agents forwarded into RUN steps (a real ssh-agent, a
git clone over SSH from OpenSSH on 127.0.0.1). Real builds (Debian base, runc)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.git_server import GitDaemon, SshServer, commit, git, make_repo
from tests.integration.test_build import built, flatten, image, polyarch, write_context

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="building needs root, runc and mmdebstrap (tools/dev setup installs them)",
)


def tree_of(root: Path, name: str, into: Path) -> Path:
    layout, manifest, _config = image(root, name)
    return flatten(layout, manifest, into)


@pytest.fixture
def served(git_daemon: GitDaemon, tmp_path: Path) -> tuple[Path, str]:
    """A repository (work tree, and the git:// URL of its bare copy the daemon serves)."""
    name = f"repo-{tmp_path.name}.git"
    work = make_repo(tmp_path / "work", {"README": "top\n", "sub/a.txt": "alpha\n",
                                         "sub/deep/b.txt": "beta\n"},
                     bare_into=git_daemon.base / name)  # fmt: skip
    git("tag", "-a", "v1", "-m", "v1", cwd=work)
    git("push", "-q", "origin", "main", "v1", cwd=work)
    return work, git_daemon.url(name)


ADD_GIT = """\
FROM {base}
ADD {url}#v1:sub /app
ADD --keep-git-dir=true {url} /src
ADD {url}#main /latest
"""


def test_add_git_takes_the_ref_and_subdir_and_follows_the_branch(
    base: str, served: tuple[Path, str], tmp_path: Path
) -> None:
    work, url = served
    root = tmp_path / "root"
    ctx = write_context(tmp_path / "ctx", ADD_GIT.format(base=base, url=url), {})
    built(root, ctx, "-t", "local/git:1")
    tree = tree_of(root, "local/git:1", tmp_path / "t1")
    assert (tree / "app/a.txt").read_text() == "alpha\n"
    assert (tree / "app/deep/b.txt").read_text() == "beta\n"
    assert not (tree / "app/README").exists() and not (tree / "app/.git").exists()
    assert (tree / "src/.git/HEAD").is_file()  # --keep-git-dir
    assert (tree / "latest/README").read_text() == "top\n"
    committed = int(git("log", "-1", "--format=%ct", cwd=work))
    assert int((tree / "app/a.txt").stat().st_mtime) == committed  # the commit's time
    assert (tree / "app/a.txt").stat().st_uid == 0

    # Unchanged remote: every step cached. A new commit on main: the main ADD runs again,
    # the one pinned to v1 does not change.
    again = built(root, ctx, "-t", "local/git:2")
    assert again["polyarch.steps"]["run"] == 0
    commit(work, {"README": "moved on\n", "sub/a.txt": "changed\n"}, "second")
    git("push", "-q", "origin", "main", cwd=work)
    built(root, ctx, "-t", "local/git:3")
    tree3 = tree_of(root, "local/git:3", tmp_path / "t3")
    assert (tree3 / "latest/README").read_text() == "moved on\n"
    assert (tree3 / "app/a.txt").read_text() == "alpha\n"


def test_add_git_checksum_and_bad_refs(base: str, served: tuple[Path, str], tmp_path: Path) -> None:
    work, url = served
    head = git("rev-parse", "HEAD", cwd=work)
    root = str(tmp_path / "root")
    good = write_context(tmp_path / "good", f"FROM {base}\nADD --checksum={head[:12]} {url} /x\n",
                         {})  # fmt: skip
    polyarch("build", "--root", root, str(good))
    for dockerfile, message in [
        (f"FROM {base}\nADD --checksum={'0' * 40} {url} /x\n", "checksum mismatch"),
        (f"FROM {base}\nADD {url}#no-such-branch /x\n", "no ref 'no-such-branch'"),
        (f"FROM {base}\nCOPY {url} /x\n", "source can't be a git ref for COPY"),
        (f"FROM {base}\nADD {url}?bogus=1 /x\n", "unknown query 'bogus'"),
    ]:
        ctx = write_context(tmp_path / f"bad-{len(message)}", dockerfile, {})
        result = polyarch("build", "--root", root, "--progress", "plain", str(ctx), check=False)
        assert result.returncode == 1, dockerfile
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_git_url_as_the_build_context(base: str, git_daemon: GitDaemon, tmp_path: Path) -> None:
    files = {
        "app/Dockerfile": f"FROM {base}\nCOPY . /ctx/\n",
        "app/hello.txt": "hi\n",
        "app/.dockerignore": "skip.me\n",
        "app/skip.me": "no\n",
        "other.txt": "x\n",
    }
    name = f"ctx-{tmp_path.name}.git"
    work = make_repo(tmp_path / "work", files, bare_into=git_daemon.base / name)
    git("push", "-q", "origin", "main", cwd=work)
    root = tmp_path / "root"
    polyarch("build", "--root", str(root), "-t", "local/gitctx:1",
             f"{git_daemon.url(name)}#main:app")  # fmt: skip
    tree = tree_of(root, "local/gitctx:1", tmp_path / "t")
    assert sorted(p.name for p in (tree / "ctx").iterdir()) == [
        ".dockerignore",
        "Dockerfile",
        "hello.txt",
    ]


NAMED = """\
# syntax=docker/dockerfile:1.7
FROM example.invalid/never-pulled:1 AS base
FROM base AS deps
RUN echo from-the-dockerfile > /deps
FROM {base} AS tools
RUN echo ran > /never-run
FROM tools AS checked
RUN test ! -e /never-run && echo replaced > /tools-replaced
FROM {base}
COPY --from=checked /tools-replaced /tools-replaced
COPY --from=extra file.txt /from-dir
COPY --from=deps /deps-made /from-replaced-stage
COPY --from=layout /etc/dpkg/dpkg.cfg /from-layout
COPY --from=repo sub/a.txt /from-git
RUN --mount=from=extra,target=/e cat /e/file.txt > /mounted
COPY --from=base /etc/os-release /from-replaced-image
"""


def test_named_contexts_replace_stages_and_images(
    base: str, served: tuple[Path, str], tmp_path: Path
) -> None:
    from tools.base_images import build_one

    _work, url = served
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "file.txt").write_text("from a named dir\n")
    replaced = tmp_path / "replaced"
    replaced.mkdir()
    (replaced / "deps-made").write_text("a directory stands in for the stage\n")
    layout = build_one("tiny", "amd64")
    ctx = write_context(tmp_path / "ctx", NAMED.format(base=base), {})
    root = tmp_path / "root"
    polyarch(
        "build", "--root", str(root), "-t", "local/named:1",
        "--build-context", f"extra={extra}",
        "--build-context", f"deps={replaced}",
        "--build-context", f"tools=docker-image://{base}",
        "--build-context", f"layout=oci-layout://{layout}:image",
        "--build-context", f"repo={url}#v1",
        "--build-context", f"example.invalid/never-pulled:1=docker-image://{base}",
        str(ctx),
    )  # fmt: skip
    tree = tree_of(root, "local/named:1", tmp_path / "t")
    assert (tree / "from-dir").read_text() == "from a named dir\n"
    assert (tree / "from-replaced-stage").read_text() == "a directory stands in for the stage\n"
    assert "dpkg" in (tree / "from-layout").read_text()
    assert (tree / "from-git").read_text() == "alpha\n"
    assert (tree / "mounted").read_text() == "from a named dir\n"
    assert "Debian" in (tree / "from-replaced-image").read_text()
    # A stage replaced by a named context runs none of its steps; one built FROM it starts
    # from the context (BuildKit's rule).
    assert (tree / "tools-replaced").read_text() == "replaced\n"


def test_syntax_directive(base: str, tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    for accepted in ("docker/dockerfile:1", "docker/dockerfile:1.7-labs",
                     "docker.io/docker/dockerfile:1.4"):  # fmt: skip
        ctx = write_context(tmp_path / accepted.replace("/", "_"),
                            f"# syntax={accepted}\nFROM {base}\n", {})  # fmt: skip
        polyarch("build", "--root", root, str(ctx))
    ctx = write_context(tmp_path / "other", f"# syntax=example.com/frontend:2\nFROM {base}\n", {})
    result = polyarch("build", "--root", root, str(ctx), check=False)
    assert result.returncode == 1
    assert "runs no external frontends" in result.stderr
    assert "Dockerfile:1" in result.stderr


SSH_CLONE = """\
FROM {toolbox}
ENV GIT_SSH_COMMAND="ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -p {port}"
RUN --mount=type=ssh git clone -q ssh://root@127.0.0.1:{port}{repo} /cloned \\
    && test -S "$SSH_AUTH_SOCK" && echo "$SSH_AUTH_SOCK" > /sock-was
RUN --mount=type=ssh,id=deploy,target=/tmp/agent,uid=1000,mode=0600 \\
    stat -c '%u %a' /tmp/agent > /deploy-sock && SSH_AUTH_SOCK=/tmp/agent ssh-add -l | wc -l \\
    > /deploy-keys
RUN test -z "$SSH_AUTH_SOCK" && ! test -e /run/buildkit/ssh_agent.0 && echo none > /no-agent
"""


def test_ssh_agent_reaches_the_step_for_a_clone_over_ssh(
    toolbox: str, sshd: SshServer, agent: str, tmp_path: Path
) -> None:
    bare = sshd.root / f"private-{tmp_path.name}.git"
    make_repo(tmp_path / "work", {"secret-code.txt": "only over ssh\n"}, bare_into=bare)
    git("push", "-q", "origin", "main", cwd=tmp_path / "work")
    dockerfile = SSH_CLONE.format(toolbox=toolbox, port=sshd.port, repo=bare)
    ctx = write_context(tmp_path / "ctx", dockerfile, {})
    root = tmp_path / "root"
    env = {**os.environ, "SSH_AUTH_SOCK": agent}
    built(root, ctx, "-t", "local/ssh:1", "--ssh", "default",
          "--ssh", f"deploy={sshd.client_key}", env=env)  # fmt: skip
    tree = tree_of(root, "local/ssh:1", tmp_path / "t")
    assert (tree / "cloned/secret-code.txt").read_text() == "only over ssh\n"
    assert (tree / "sock-was").read_text() == "/run/buildkit/ssh_agent.0\n"
    assert (tree / "deploy-sock").read_text() == "1000 600\n"
    assert (tree / "deploy-keys").read_text() == "1\n"  # an agent polyarch started for the key
    assert (tree / "no-agent").read_text() == "none\n"
    key = sshd.client_key.read_bytes()
    for path in tree.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert key not in path.read_bytes()

    # Without an agent (the mounts are optional, as written) the clone is refused by the server.
    bare_env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    result = subprocess.run(
        [sys.executable, "-m", "polyarch", "build", "--root", str(root), "--progress", "plain",
         "--no-cache", str(ctx)],
        capture_output=True, text=True, env=bare_env, check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Permission denied (publickey)" in result.stderr


def test_add_git_over_ssh_uses_the_ssh_agent(
    base: str, sshd: SshServer, agent: str, tmp_path: Path
) -> None:
    bare = sshd.root / f"add-{tmp_path.name}.git"
    make_repo(tmp_path / "work", {"f.txt": "over ssh\n"}, bare_into=bare)
    git("push", "-q", "origin", "main", cwd=tmp_path / "work")
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nADD {sshd.url(bare)} /x\n", {})
    root = tmp_path / "root"
    built(root, ctx, "-t", "local/sshadd:1", "--ssh", "default",
          env={**os.environ, "SSH_AUTH_SOCK": agent})  # fmt: skip
    assert (tree_of(root, "local/sshadd:1", tmp_path / "t") / "x/f.txt").read_text() == (
        "over ssh\n"
    )
