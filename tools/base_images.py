"""Base images made from Debian packages with mmdebstrap, cached outside the clone.

    python tools/base_images.py RECIPE[,RECIPE] --arch amd64 [--arch arm64] [--push REF]

Each (recipe, architecture) is built once into an OCI layout under the cache directory
(`$POLYARCH_FIXTURES`, default /var/cache/polyarch-fixtures), in a folder named after the
recipe and a hash of everything that defines it (so a changed recipe is built again, and an
unchanged one never is). With `--push`, the architectures are pushed as one multi-platform
index. No container registry outside is needed: packages come from mmdebstrap's default
Debian sources, or from the mirror in $POLYARCH_DEBIAN_MIRROR.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from polyarch.api import RegistryOptions, Session  # noqa: E402
from polyarch.digest import Digest  # noqa: E402
from polyarch.layers import LayerSink  # noqa: E402
from polyarch.oci import mediatypes as mt  # noqa: E402
from polyarch.oci.models import Descriptor, Index, Manifest  # noqa: E402
from polyarch.platform import Platform  # noqa: E402
from polyarch.reference import Reference  # noqa: E402
from polyarch.store import OciLayout  # noqa: E402

SUITE = "bookworm"
# mmdebstrap's own default sources for the suite, unless a mirror is given (a URL such as
# http://mirror.lan/debian): a setting of the machine, never a host name in this file.
MIRROR_ENV = "POLYARCH_DEBIAN_MIRROR"
# A recipe: what mmdebstrap installs, and the image config around it.
RECIPES: dict[str, dict[str, object]] = {
    # Seconds for any architecture: packages are unpacked, no maintainer script runs under
    # emulation; a hook on the host gives it /bin/sh. Enough for RUN steps in tests.
    "tiny": {
        "variant": "extract",
        "include": ["dash", "coreutils", "dpkg", "libc-bin", "sed", "grep"],
        "hooks": ['ln -sf dash "$1/bin/sh"'],
        "config": {"Cmd": ["/bin/sh"]},
    },
    "debian": {
        "variant": "minbase",
        "include": [],
        "config": {"Cmd": ["bash"]},
    },
    # git and an SSH client, for RUN --mount=type=ssh and git sources in tests.
    "toolbox": {
        "variant": "minbase",
        "include": ["git", "openssh-client", "ca-certificates"],
        "config": {"Cmd": ["bash"]},
    },
    # python:3-slim's part: Python with pip and venv (the docker init template's base).
    "python": {
        "variant": "minbase",
        "include": ["python3", "python3-pip", "python3-venv", "ca-certificates", "adduser"],
        "hooks": ['ln -sf python3 "$1/usr/bin/python"'],
        "config": {"Cmd": ["python3"]},
    },
    # golang's part: the Go toolchain (the docker init template's base).
    "golang": {
        "variant": "minbase",
        "include": ["golang-go", "ca-certificates", "git"],
        "config": {"Cmd": ["bash"], "WorkingDir": "/go"},
    },
    # The seed's node:14-alpine: node with npm and yarn (Debian calls it yarnpkg).
    "node": {
        "variant": "minbase",
        "include": ["nodejs", "npm", "yarnpkg", "ca-certificates"],
        "hooks": ['ln -sf yarnpkg "$1/usr/bin/yarn"'],
        "config": {"Cmd": ["node"]},
    },
    # The seed's nginx:alpine: nginx alone (no envsubst: the seed's final stage installs it).
    "nginx": {
        "variant": "minbase",
        "include": ["nginx-light", "curl", "ca-certificates"],
        "config": {"Cmd": ["nginx", "-g", "daemon off;"], "ExposedPorts": {"80/tcp": {}}},
    },
    # The seed's nginx/nginx-prometheus-exporter image: only its binary is borrowed, so the
    # packages are unpacked without running their scripts (seconds for any architecture).
    "exporter": {
        "variant": "extract",
        "include": ["prometheus-nginx-exporter"],
        "config": {
            "Entrypoint": ["/usr/bin/prometheus-nginx-exporter"],
            "ExposedPorts": {"9113/tcp": {}},
        },
    },
}
VERSION = 1  # bump when the way images are made changes
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


SKIP_SECURITY_HOOK = "--setup-hook=sed -i '/-security/d' \"$1/etc/apt/sources.list\""


def cache_root() -> Path:
    return Path(os.environ.get("POLYARCH_FIXTURES", "/var/cache/polyarch-fixtures"))


def recipe_key(name: str, arch: str) -> str:
    recipe = RECIPES[name]
    mirror = os.environ.get(MIRROR_ENV, "")
    text = json.dumps([VERSION, SUITE, name, arch, recipe] + ([mirror] if mirror else []),
                      sort_keys=True)  # fmt: skip
    return f"{name}-{arch}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def build_one(name: str, arch: str) -> Path:
    """The OCI layout of (recipe, arch), built if the cache does not have it."""
    target = cache_root() / recipe_key(name, arch)
    if (target / "index.json").is_file() and (target / ".complete").is_file():
        return target
    recipe = RECIPES[name]
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    try:
        rootfs_tar = work / "rootfs.tar"
        include = ",".join(recipe["include"])  # type: ignore[arg-type]
        cmd = [
            "mmdebstrap", f"--variant={recipe['variant']}", "--mode=root", "--format=tar",
            f"--architectures={arch}", "--skip=cleanup/apt/lists",
        ]  # fmt: skip
        if include:
            cmd.append(f"--include={include}")
        for hook in recipe.get("hooks") or []:  # type: ignore[attr-defined]
            cmd.append(f"--customize-hook={hook}")
        cmd += [SUITE, str(rootfs_tar)]
        if os.environ.get(MIRROR_ENV):
            cmd.append(f"deb {os.environ[MIRROR_ENV]} {SUITE} main")
        print(f"building base image {name} for {arch} with mmdebstrap...", file=sys.stderr)
        env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
        for attempt in (1, 2, 3):
            done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False)
            if done.returncode == 0:
                break
            if attempt == 3:
                raise subprocess.CalledProcessError(done.returncode, cmd)
            if attempt == 2:
                # The security suite's index can be out of step with its Release file for a
                # while (a mirror or proxy mid-sync: "File has unexpected size"); a test
                # fixture can do without security updates, so the last try leaves it out.
                cmd.insert(1, SKIP_SECURITY_HOOK)
                print("mmdebstrap failed twice; trying without the security suite",
                      file=sys.stderr)  # fmt: skip
                continue
            print("mmdebstrap failed; trying once more", file=sys.stderr)
        layout_dir = work / "layout"
        layout = OciLayout(layout_dir)
        sink = LayerSink(layout.blobs)
        with rootfs_tar.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                sink.write(chunk)
        layer = sink.finish()
        platform = Platform.parse(f"linux/{arch}")
        config = {
            "architecture": platform.architecture,
            "os": "linux",
            **({"variant": platform.variant} if platform.variant else {}),
            "created": "2023-11-14T22:13:20Z",
            "config": {"Env": [PATH_ENV], **recipe["config"]},  # type: ignore[dict-item]
            "rootfs": {"type": "layers", "diff_ids": [str(layer.diff_id)]},
            "history": [
                {
                    "created": "2023-11-14T22:13:20Z",
                    "created_by": f"mmdebstrap {recipe['variant']} {SUITE} {include}".strip(),
                }
            ],
        }
        raw = json.dumps(config, separators=(",", ":")).encode()
        config_digest = layout.blobs.put_bytes(raw)
        manifest = Manifest.create(
            Descriptor(mt.OCI_CONFIG, config_digest, len(raw)),
            [Descriptor(layer.media_type, layer.digest, layer.size)],
        )
        layout.write_document(manifest.raw)
        layout.set_ref("image", manifest.descriptor(platform))
        rootfs_tar.unlink()
        (layout_dir / ".complete").write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        layout_dir.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def push(name: str, arches: list[str], ref: str, session: Session) -> str:
    """Push the recipe's images for `arches` as one index under `ref`."""
    entries = []
    for arch in arches:
        layout_dir = build_one(name, arch)
        session.copy(f"oci:{layout_dir}:image", ref.rsplit(":", 1)[0] + f":{name}-{arch}")
        layout = OciLayout(layout_dir)
        entries.append(layout.resolve("image"))
    index = Index.create(
        [
            Descriptor(e.media_type, e.digest, e.size, platform=Platform.parse(f"linux/{a}"))
            for e, a in zip(entries, arches, strict=True)
        ]
    )
    target = Reference.parse(ref)
    session.client.put_manifest(target, index.raw, index.media_type)
    return str(Digest.of(index.raw))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", help="comma separated: " + ", ".join(RECIPES))
    parser.add_argument("--arch", action="append", default=[], help="Debian architecture")
    parser.add_argument("--push", metavar="REF", help="push the recipe as REF (one recipe)")
    args = parser.parse_args()
    arches = args.arch or ["amd64"]
    names = [n for n in args.recipes.split(",") if n]
    for name in names:
        if name not in RECIPES:
            sys.exit(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
        for arch in arches:
            print(build_one(name, arch))
    if args.push:
        if len(names) != 1:
            sys.exit("--push takes one recipe")
        with Session(RegistryOptions()) as session:
            print(push(names[0], arches, args.push, session))


if __name__ == "__main__":
    main()
