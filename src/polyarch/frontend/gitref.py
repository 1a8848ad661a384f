"""Git references as BuildKit reads them (`dfgitutil.ParseGitRef`): in `ADD <git-url>`, a git
build context (`polyarch build URL`), and `--build-context NAME=URL`.

A reference is a remote in one of git's transports (`https://host/repo.git`, `http://...git`,
`git://`, `ssh://`, or scp-style `user@host:path`), then optionally `?query` and `#ref:subdir`.
An http(s) URL is a git reference only when its path ends in `.git`; any other is a download.
The query may say `ref`, `branch`, `tag`, `subdir`, `checksum` (or `commit`: the commit, or a
prefix of it, the ref must be at), `keep-git-dir` and `submodules`.

Pure: no I/O.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, urlsplit, urlunsplit

from polyarch.errors import PolyarchError

_SCHEME: Final = re.compile(r"\A([a-zA-Z0-9]+)://")
_SCP: Final = re.compile(r"\A([a-zA-Z0-9-_]+)@([a-zA-Z0-9-.]+):(.*?)(?:\?(.*?))?(?:#(.*))?\Z")
_TRANSPORTS: Final = ("http", "https", "ssh", "git")
_BOOLEANS: Final = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}


class GitRefError(PolyarchError):
    """A git reference that cannot be used as written."""


@dataclass(frozen=True, slots=True)
class GitRef:
    """A parsed git reference: the remote to fetch, and what to take of it."""

    remote: str
    ref: str = ""  # a branch, a tag, or a commit; "": the remote's HEAD
    subdir: str = ""  # a directory of the tree ("" for all of it)
    checksum: str = ""  # the commit (or a prefix) the ref must resolve to
    keep_git_dir: bool | None = None
    submodules: bool = True
    unencrypted: bool = False  # http:// or git://: no TLS

    @property
    def short_name(self) -> str:
        return self.remote.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")


def parse_git_ref(text: str) -> GitRef | None:
    """The git reference `text` is, or None when it is not one (a path, a plain URL).
    A reference with a bad query or fragment is a `GitRefError`."""
    if text.startswith(("./", "../")):
        return None
    scheme = _SCHEME.match(text)
    if scheme:
        proto = scheme.group(1).lower()
        if proto not in _TRANSPORTS:
            return None
        parts = urlsplit(text)
        if proto in ("http", "https") and not parts.path.endswith(".git"):
            return None
        remote = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        query, fragment = parts.query, parts.fragment
        unencrypted = proto in ("http", "git")
    else:
        scp = _SCP.match(text)
        if scp is None:
            return None
        user, host, path, query, fragment = scp.groups()
        remote = f"{user}@{host}:{path}"
        query, fragment = query or "", fragment or ""
        unencrypted = False
    ref, _, subdir = fragment.partition(":")
    subdir = _clean_subdir(subdir)
    found = GitRef(remote, ref, subdir, unencrypted=unencrypted)
    return _with_query(found, query, text) if query else found


def _clean_subdir(subdir: str) -> str:
    return posixpath.normpath("/" + subdir).lstrip("/") if subdir else ""


def _with_query(found: GitRef, query: str, text: str) -> GitRef:
    values = parse_qs(query, keep_blank_values=True)
    ref, subdir, checksum = found.ref, found.subdir, ""
    keep: bool | None = None
    submodules = True
    tag = branch = ""
    for key, items in values.items():
        if len(items) > 1:
            raise GitRefError(f"{text}: query {key!r} has multiple values")
        value = items[0]
        if value == "" and key not in ("submodules", "keep-git-dir"):
            raise GitRefError(f"{text}: query {key!r} has no value")
        if key == "ref":
            if ref and ref != value:
                raise GitRefError(f"{text}: ref conflicts: {ref!r} vs {value!r}")
            ref = value
        elif key == "tag":
            tag = value
        elif key == "branch":
            branch = value
        elif key == "subdir":
            if subdir and subdir != _clean_subdir(value):
                raise GitRefError(f"{text}: subdir conflicts: {subdir!r} vs {value!r}")
            subdir = _clean_subdir(value)
        elif key in ("checksum", "commit"):
            checksum = value
        elif key in ("keep-git-dir", "submodules"):
            flag = _BOOLEANS.get(value.lower(), None) if value else True
            if flag is None:
                raise GitRefError(f"{text}: invalid {key} value: {value!r}")
            if key == "keep-git-dir":
                keep = flag
            else:
                submodules = flag
        else:
            raise GitRefError(f"{text}: unknown query {key!r} (known: ref, branch, tag, "
                              "subdir, checksum, commit, keep-git-dir, submodules)")  # fmt: skip
    if tag and branch:
        raise GitRefError(f"{text}: branch and tag are mutually exclusive")
    named = f"refs/tags/{tag}" if tag else f"refs/heads/{branch}" if branch else ""
    if named:
        if ref and ref not in (named, tag or branch):
            raise GitRefError(f"{text}: ref conflicts: {ref!r} vs {named!r}")
        ref = named
    if checksum and not re.fullmatch(r"[0-9a-f]{7,64}", checksum):
        raise GitRefError(f"{text}: checksum wants a commit (hex), got {checksum!r}")
    return GitRef(found.remote, ref, subdir, checksum, keep, submodules, found.unencrypted)
