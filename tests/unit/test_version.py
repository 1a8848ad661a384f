import subprocess
import sys
from pathlib import Path

import pytest

from polyarch.errors import UsageError
from polyarch.version import version

SHA = "abcdef0123456789abcdef0123456789abcdef01"


def test_the_rule() -> None:
    assert version([], SHA, "1.1.0", dirty=False) == "1.1.0-abcdef0"
    assert version(["v2.0.0", "v1.9.0"], SHA, "1.1.0", dirty=False) == "v2.0.0"
    assert version(["v2.0.0"], SHA, "1.1.0", dirty=True) == "v2.0.0-dirty"
    with pytest.raises(UsageError):
        version([], "not-a-sha", "1.1.0", dirty=False)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def polyarch_version(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polyarch", "version", "--base-version", "1.1.0", str(repo)],
        capture_output=True, text=True,
    )  # fmt: skip


def test_on_real_repositories(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "f").write_text("1")
    git(repo, "add", "f")
    git(repo, "commit", "-qm", "one")
    first = git(repo, "rev-parse", "HEAD")
    # No tag: BASE_VERSION-<short sha>.
    assert polyarch_version(repo).stdout.strip() == f"1.1.0-{first[:7]}"
    # A tag on HEAD.
    git(repo, "tag", "v1.2.0")
    assert polyarch_version(repo).stdout.strip() == "v1.2.0"
    # Two tags: the first that git lists.
    git(repo, "tag", "v1.10.0")
    assert polyarch_version(repo).stdout.strip() == "v1.10.0"
    # A tag on a later commit does not contain HEAD... until HEAD is that commit's ancestor.
    (repo / "f").write_text("2")
    git(repo, "commit", "-qam", "two")
    second = git(repo, "rev-parse", "HEAD")
    assert polyarch_version(repo).stdout.strip() == f"1.1.0-{second[:7]}"
    git(repo, "tag", "v2.0.0")
    git(repo, "checkout", "-q", first)
    assert polyarch_version(repo).stdout.strip() == "v1.10.0"  # v2.0.0 contains it too
    git(repo, "checkout", "-q", second)
    # A dirty tree is flagged.
    (repo / "f").write_text("3")
    assert polyarch_version(repo).stdout.strip() == "v2.0.0-dirty"


def test_outside_a_repository(tmp_path: Path) -> None:
    result = polyarch_version(tmp_path)
    assert result.returncode == 2
    assert "is not in a git repository" in result.stderr
