"""`polyarch emulators`: what each platform needs here, and handlers that survive a reboot.

A reboot is stood for by removing the handler from the kernel; the boot is systemd-binfmt, the
program systemd-binfmt.service runs, given the binfmt.d file polyarch wrote."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from polyarch.platform import Platform
from polyarch.runtime import binfmt
from tests.integration.helpers import needs_emulation, polyarch

pytestmark = needs_emulation
AMD64 = Platform.parse("linux/amd64")
MIPS = Platform.parse("linux/mips64le")  # one no other test uses
SYSTEMD_BINFMT = Path("/lib/systemd/systemd-binfmt")


@pytest.fixture
def mips_handler() -> Iterator[Path]:
    """linux/mips64le's handler, as the test found it afterwards (registered or not)."""
    if binfmt.formats().get("qemu-mips64el") is None:
        pytest.skip("qemu-user-static has no mips64el format here")
    handler = binfmt.BINFMT / "qemu-mips64el"
    before = handler.read_text() if handler.exists() else None
    yield handler
    if handler.exists():
        handler.write_text("-1")
    if before is not None:
        binfmt.install([MIPS], AMD64)


def test_persist_writes_a_handler_systemd_registers_at_boot(
    mips_handler: Path, tmp_path: Path
) -> None:
    if not SYSTEMD_BINFMT.exists():
        pytest.skip("no systemd-binfmt here")
    etc, vendor = tmp_path / "etc", tmp_path / "usr-lib"
    done = binfmt.install([MIPS], AMD64, persist=(etc, vendor))
    written = etc / "qemu-mips64el.conf"
    assert done[-1] == f"linux/mips64le: wrote {written}: registered at boot by systemd-binfmt"
    assert "F" in mips_handler.read_text().split("flags: ")[1].split()[0]
    # Again: the same file, rewritten in place, nothing else in the directory.
    binfmt.install([MIPS], AMD64, persist=(etc, vendor))
    assert sorted(p.name for p in etc.iterdir()) == ["qemu-mips64el.conf"]
    # The reboot: the kernel forgets the handler; systemd-binfmt registers it from the file.
    mips_handler.write_text("-1")
    assert not mips_handler.exists()
    boot = subprocess.run([str(SYSTEMD_BINFMT), str(written)], capture_output=True, text=True)
    assert boot.returncode == 0, boot.stderr
    state = mips_handler.read_text()
    assert "enabled" in state.splitlines()[0]
    assert "flags: " in state and "F" in state.split("flags: ")[1].split()[0]
    assert binfmt.status(MIPS, AMD64).fix_binary


def test_persist_leaves_a_vendor_handler_with_the_f_flag_alone(
    mips_handler: Path, tmp_path: Path
) -> None:
    etc, vendor = tmp_path / "etc", tmp_path / "usr-lib"
    vendor.mkdir()
    fmt = binfmt.formats()["qemu-mips64el"]
    (vendor / "qemu-mips64el.conf").write_text(f"# from the package\n{fmt.register_line()}\n")
    done = binfmt.install([MIPS], AMD64, persist=(etc, vendor))
    assert done[-1] == (f"linux/mips64le: registered at boot by {vendor / 'qemu-mips64el.conf'} "
                        "(F flag)")  # fmt: skip
    assert not etc.exists()
    # A vendor file without F (fails inside containers) is hidden by one written in /etc.
    line = fmt.register_line().rsplit(":", 1)[0] + ":P"
    (vendor / "qemu-mips64el.conf").write_text(line + "\n")
    done = binfmt.install([MIPS], AMD64, persist=(etc, vendor))
    assert done[-1] == (f"linux/mips64le: wrote {etc / 'qemu-mips64el.conf'}, in place of "
                        f"{vendor / 'qemu-mips64el.conf'}, which lacks the F flag: registered "
                        "at boot by systemd-binfmt")  # fmt: skip


def test_the_cli_persists_through_the_packages_own_boot_files() -> None:
    """Debian's qemu-user-static ships /usr/lib/binfmt.d files with the F flag: --persist says
    so and writes nothing to /etc."""
    vendor = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
    if not vendor.exists() or Path("/etc/binfmt.d/qemu-aarch64.conf").exists():
        pytest.skip("not Debian's qemu-user-static layout")
    done = polyarch("emulators", "install", "--persist", "--platform", "linux/arm64")
    assert done.stdout.splitlines()[-1] == f"linux/arm64: registered at boot by {vendor} (F flag)"
    assert not Path("/etc/binfmt.d/qemu-aarch64.conf").exists()


def test_variants_are_their_architectures_and_other_oses_get_no_qemu_advice() -> None:
    shown = polyarch("emulators", "--platform", "linux/amd64/v3,linux/arm64/v9,linux/arm64,"
                     "windows/amd64", "--format", "json")  # fmt: skip
    rows = {row["platform"]: row for row in json.loads(shown.stdout)}
    assert rows["linux/amd64/v3"]["state"] == "native"
    assert rows["linux/arm64/v9"]["state"] == rows["linux/arm64"]["state"] == "emulated"
    assert rows["linux/arm64/v9"]["interpreter"] == rows["linux/arm64"]["interpreter"]
    assert rows["windows/amd64"]["state"] == "unsupported"
    table = polyarch("emulators", "--platform", "windows/amd64").stdout
    assert "QEMU's user mode runs Linux programs only" in table
    assert "qemu-user-static" not in table and "emulators install" not in table
    refused = polyarch("emulators", "install", "--platform", "windows/amd64", check=False)
    assert refused.returncode == 1
    assert "no emulator runs windows/amd64 programs" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_an_arm64_v9_build_runs_under_the_arm64_emulator(tiny: str, tmp_path: Path) -> None:
    """What `emulators` says is what `build` does: arm64/v9 takes qemu-aarch64 (tiny's arm64
    image serves it, as the v9 variant falls back to arm64)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {tiny}\nRUN uname -m > /arch\n")
    out = tmp_path / "out"
    done = polyarch("build", "--root", str(tmp_path / "root"), "--platform", "linux/arm64/v9",
                    "--no-emulator-install", "-o", f"type=local,dest={out}", str(ctx))  # fmt: skip
    assert done.returncode == 0
    assert (out / "arch").read_text() == "aarch64\n"
    shutil.rmtree(tmp_path / "root", ignore_errors=True)
