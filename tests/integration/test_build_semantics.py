"""What a Dockerfile says reaches the image: RUN heredocs, network and security modes, COPY
--link, WORKDIR owners, refused flags. Real builds (Debian base, runc)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_build import flatten, image, polyarch, write_context

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="building needs root, runc and mmdebstrap (tools/dev setup installs them)",
)

HEREDOCS = """\
FROM {base}
RUN <<EOT
echo hello > /x
echo "from a body run by the shell: $0" > /x-shell
EOT
RUN <<EOT
#!/bin/bash
echo "shebang bash $BASH_VERSINFO" > /shebang
EOT
RUN bash <<EOT
echo "bash body ${{HOME}}" > /bash-body
EOT
RUN perl <<'EOT'
open(my $f, ">", "/perl"); print $f "perl says hi\\n"; close $f;
EOT
RUN <<-EOT
\techo tabs stripped > /chomped
\tEOT
RUN cat <<ONE > /one && cat <<TWO > /two
first
ONE
second
TWO
ARG NAME=world
RUN cat <<'QUOTED' > /quoted && cat <<PLAIN > /plain
no $NAME here
QUOTED
hello $NAME
PLAIN
RUN << EOT
echo spaced > /spaced
EOT
"""


def test_run_heredocs_as_buildkit_runs_them(base: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    ctx = write_context(tmp_path / "ctx", HEREDOCS.format(base=base), {})
    polyarch("build", "--root", str(root), "-t", "local/heredocs:1", str(ctx))
    layout, manifest, config = image(root, "local/heredocs:1")
    tree = flatten(layout, manifest, tmp_path / "tree")
    assert (tree / "x").read_text() == "hello\n"
    assert (tree / "x-shell").read_text() == "from a body run by the shell: /bin/sh\n"
    assert (tree / "shebang").read_text() == "shebang bash 5\n"
    assert (tree / "bash-body").read_text() == "bash body /root\n"
    assert (tree / "perl").read_text() == "perl says hi\n"
    assert (tree / "chomped").read_text() == "tabs stripped\n"
    assert (tree / "one").read_text() == "first\n"
    assert (tree / "two").read_text() == "second\n"
    assert (tree / "quoted").read_text() == "no $NAME here\n"
    assert (tree / "plain").read_text() == "hello world\n"
    assert (tree / "spaced").read_text() == "spaced\n"
    assert not (tree / "dev" / "pipes").exists()  # the shebang file was mounted, not copied
    history = [h["created_by"] for h in json.loads(config.raw)["history"]]
    assert "ARG NAME=world" in history
    assert any(h.startswith("RUN |1 NAME=world /bin/sh -c cat <<'QUOTED'") for h in history)


def test_network_none_sees_only_loopback(base: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    dockerfile = (
        f"FROM {base}\n"
        "RUN --network=none cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /none\n"
        "RUN cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /default\n"
    )
    ctx = write_context(tmp_path / "ctx", dockerfile, {})
    polyarch("build", "--root", str(root), "-t", "local/net:1", str(ctx))
    layout, manifest, _config = image(root, "local/net:1")
    tree = flatten(layout, manifest, tmp_path / "tree")
    assert (tree / "none").read_text().split() == ["lo"]
    assert len((tree / "default").read_text().split()) > 1  # the host's interfaces


def test_security_insecure_needs_the_entitlement(base: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    dockerfile = (
        f"FROM {base}\n"
        "RUN --security=insecure grep CapEff /proc/self/status | cut -f2 > /insecure\n"
        "RUN grep CapEff /proc/self/status | cut -f2 > /sandbox\n"
        "RUN --security=insecure grep Seccomp: /proc/self/status | cut -f2 > /insecure-seccomp\n"
        "RUN grep Seccomp: /proc/self/status | cut -f2 > /seccomp\n"
    )
    ctx = write_context(tmp_path / "ctx", dockerfile, {})
    refused = polyarch("build", "--root", str(root), str(ctx), check=False)
    assert refused.returncode == 1
    assert "Dockerfile:2:" in refused.stderr
    assert "--allow security.insecure" in refused.stderr
    polyarch("build", "--root", str(root), "--allow", "security.insecure", "-t", "local/sec:1",
             str(ctx))  # fmt: skip
    layout, manifest, _config = image(root, "local/sec:1")
    tree = flatten(layout, manifest, tmp_path / "tree")
    insecure = int((tree / "insecure").read_text(), 16)
    sandbox = int((tree / "sandbox").read_text(), 16)
    assert insecure & (1 << 21)  # CAP_SYS_ADMIN
    assert not sandbox & (1 << 21)
    assert (tree / "seccomp").read_text() == "2\n"  # Docker's default profile, as a filter
    assert (tree / "insecure-seccomp").read_text() == "0\n"


def test_unimplemented_run_flags_are_refused_by_name(base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN --device=/dev/fuse true\n", {})
    result = polyarch("build", "--root", str(tmp_path / "root"), str(ctx), check=False)
    assert result.returncode == 1
    assert "Dockerfile:2: RUN --device is not supported by polyarch" in result.stderr
    assert "Traceback" not in result.stderr


def test_copy_link_does_not_depend_on_the_layers_below(base: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    dockerfile = f"FROM {base}\nRUN echo {{}} > /below\nCOPY --link app.txt /srv/app.txt\n"
    ctx = write_context(tmp_path / "ctx", dockerfile.format("one"), {"app.txt": "app\n"})
    polyarch("build", "--root", str(root), "-t", "local/link:1", str(ctx))
    (ctx / "Dockerfile").write_text(dockerfile.format("two"))
    second = polyarch("build", "--root", str(root), "-t", "local/link:2", "--progress", "json",
                      str(ctx))  # fmt: skip
    events = [json.loads(line) for line in second.stderr.splitlines()]
    cached = [e["description"] for e in events if e["event"] == "cached"]
    assert cached == ["COPY app.txt /srv/app.txt"]  # the RUN below changed; the copy did not
    one = image(root, "local/link:1")[1]
    two = image(root, "local/link:2")[1]
    assert one.layers[-1] == two.layers[-1]  # the very same layer blob
    tree = flatten(*image(root, "local/link:2")[:2], tmp_path / "tree")
    assert (tree / "srv" / "app.txt").read_text() == "app\n"
    assert (tree / "below").read_text() == "two\n"


def test_copying_nested_directories_twice_makes_the_same_layer(base: str, tmp_path: Path) -> None:
    """Same inputs, same layer: a directory copied inside a copied directory (and the ones
    --parents makes) takes its source's time, not the time of the copy. Two fresh
    workspaces, a second apart, no SOURCE_DATE_EPOCH."""
    dockerfile = f"FROM {base}\nCOPY app /app\nCOPY --parents src/lib/x.txt /p/\n"
    ctx = write_context(tmp_path / "ctx", dockerfile, {"app/a/b/c.txt": "c\n",
                                                       "src/lib/x.txt": "x\n"})  # fmt: skip
    layers = []
    for n in (1, 2):
        root = tmp_path / f"root{n}"
        polyarch("build", "--root", str(root), "-t", f"local/nested:{n}", str(ctx))
        layers.append(image(root, f"local/nested:{n}")[1].layers[-2:])
        time.sleep(1.1)
    assert layers[0] == layers[1]


def test_copy_from_an_image_not_unpacked_reads_only_its_sources_and_makes_the_same_layer(
    base: str, tmp_path: Path
) -> None:
    """COPY --from an image no step has unpacked takes its plain sources from the layers
    alone; the layer is the one a copy from the unpacked image makes."""
    sources = "/etc/debian_version /usr/bin/env /usr/share/doc/"
    dockerfile = f"FROM {base} AS img\nFROM scratch\nCOPY --from=img {sources} /out/\n"
    ctx = write_context(tmp_path / "ctx", dockerfile, {})
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    fresh = subprocess.run([sys.executable, "-m", "polyarch", "build", "--root",
                            str(tmp_path / "fresh"), "-t", "local/sparse:1", str(ctx)],
                           capture_output=True, text=True, env=env, check=True)  # fmt: skip
    assert fresh.returncode == 0
    # Nothing of the image was unpacked: the only snapshot is the copy's own layer.
    assert len(list((tmp_path / "fresh" / "snapshots").iterdir())) == 1
    # The same copy after a step has unpacked the image: read through its snapshot.
    warm = write_context(tmp_path / "warm", f"FROM {base}\nRUN true\n", {})
    unpacked = tmp_path / "unpacked"
    subprocess.run([sys.executable, "-m", "polyarch", "build", "--root", str(unpacked),
                    str(warm)], capture_output=True, env=env, check=True)  # fmt: skip
    subprocess.run([sys.executable, "-m", "polyarch", "build", "--root", str(unpacked), "-t",
                    "local/sparse:1", str(ctx)], capture_output=True, env=env,
                   check=True)  # fmt: skip
    one = image(tmp_path / "fresh", "local/sparse:1")
    two = image(unpacked, "local/sparse:1")
    assert one[1].layers == two[1].layers
    tree = flatten(*one[:2], tmp_path / "tree")
    assert (tree / "out" / "debian_version").is_file() and (tree / "out" / "env").is_file()
    assert any((tree / "out").rglob("copyright"))  # the directory's content came along


def test_workdir_belongs_to_the_user_and_entrypoint_resets_a_stage_cmd(
    base: str, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    dockerfile = (
        f'FROM {base} AS parent\nRUN useradd -u 4321 worker\nCMD ["from-parent"]\n'
        'FROM parent\nUSER worker\nWORKDIR /home/worker/app\nENTRYPOINT ["/bin/true"]\n'
    )
    ctx = write_context(tmp_path / "ctx", dockerfile, {})
    polyarch("build", "--root", str(root), "-t", "local/wd:1", str(ctx))
    layout, manifest, config = image(root, "local/wd:1")
    tree = flatten(layout, manifest, tmp_path / "tree")
    assert (tree / "home" / "worker" / "app").stat().st_uid == 4321
    assert config.entrypoint == ("/bin/true",)
    assert config.cmd is None  # BuildKit: ENTRYPOINT resets a CMD this stage did not set
