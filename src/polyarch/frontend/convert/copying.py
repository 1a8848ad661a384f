"""COPY and ADD: sources from the context, a stage, an image, a named context, git, URLs or
heredocs, into one file op on the stage (or on nothing and merged, with `--link`)."""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from dataclasses import dataclass, field

from polyarch.frontend.convert.lints import Lints
from polyarch.frontend.convert.sources import Sources
from polyarch.frontend.convert.state import StageContext, State
from polyarch.frontend.convert.vertices import Vertices
from polyarch.frontend.convert.words import Words, error_at
from polyarch.frontend.dockerfile.instructions import Instruction
from polyarch.frontend.dockerfile.syntax import Heredoc
from polyarch.frontend.gitref import GitRef, GitRefError, parse_git_ref
from polyarch.graph.model import OnceCheck
from polyarch.graph.ops import Copy, FileOp, HttpSource, MergeOp, Mkfile


@dataclass
class _Copying:
    """One COPY or ADD as it is put together: what every source's copy shares, and the
    inputs and actions of the file op so far."""

    ins: Instruction
    ctx: StageContext
    dest: str
    chown: str
    chmod: str
    link: bool
    inputs: list[str]
    actions: list[Copy] = field(default_factory=list)
    checks: list[OnceCheck] = field(default_factory=list)

    def take(
        self, key: str, paths: tuple[str, ...], *, keep_owner: bool = False,
        parents: bool = False, excludes: tuple[str, ...] = (), unpack: bool = False,
    ) -> None:  # fmt: skip
        self.inputs.append(key)
        self.actions.append(Copy(len(self.inputs) - 1, paths, self.dest, self.chown, self.chmod,
                                 keep_owner, parents, excludes, unpack, self.link))  # fmt: skip


class CopyStep:
    def __init__(self, words: Words, lints: Lints, vertices: Vertices, sources: Sources) -> None:
        self.words = words
        self.lints = lints
        self.vertices = vertices
        self.sources = sources

    def __call__(self, ins: Instruction, st: State, ctx: StageContext) -> None:
        is_add = ins.kind == "ADD"
        paths, inline, dest_word = ins.sources_and_dest()
        sources = [self.words.expand(p, st.env, ins) for p in paths]
        written_dest = self.words.expand(dest_word, st.env, ins)
        chown = self.words.expand(ins.flag("chown") or "", st.env, ins)
        chmod = self.words.expand(ins.flag("chmod") or "", st.env, ins)
        checksum = self.words.expand(ins.flag("checksum") or "", st.env, ins)
        if chmod and not _valid_chmod(chmod):
            raise error_at(ins, f"invalid chmod parameter: '{chmod}'. it should be octal "
                                "string and between 0 and 07777")  # fmt: skip
        gits, urls, local = _kinds(sources, is_add, checksum, ins)
        # COPY --link: the copy is made on nothing and stacked on the stage, so it does not
        # depend on (or look at) the layers below; with --chmod, or a --chown by name (which
        # needs the stage's /etc/passwd), it is a plain copy, as BuildKit falls back too.
        link = ins.bool_flag("link") and not chmod and _numeric_owner(chown)
        base = self.vertices.scratch(ctx.platform) if link else st.head
        job = _Copying(ins, ctx, _destination(written_dest, st), chown, chmod, link, [base])
        shown_from = self._local(job, local, is_add)
        self._gits(job, gits, checksum)
        for url in urls:
            name = _url_filename(url)
            if name is None:
                raise error_at(ins, f"ADD {url}: the URL's path ends in '..' or names a file "
                                    "that cannot be written (a NUL byte); name the file in the "
                                    "URL")  # fmt: skip
            key = self.vertices.add(HttpSource(url, name, checksum), (), f"ADD {url}",
                                    ctx.platform, ins, internal=True)  # fmt: skip
            job.take(key, (name,), keep_owner=True, unpack=ins.flags.get("unpack") is True)
        self._inline(job, inline, st)
        history = [ins.kind]
        if ins.bool_flag("parents"):
            history.append("--parents")
        if chown:
            history.append(f"--chown={chown}")
        if chmod:
            history.append(f"--chmod={chmod}")
        history += [*sources, *(f"<<{d.name}" for d in inline), written_dest]
        shown_items = " ".join([*sources, *(f"<<{h.name}" for h in inline), written_dest])
        description = f"{ins.kind} {shown_from}{shown_items}"
        copied = self.vertices.add(FileOp(tuple(job.actions)), tuple(job.inputs), description,
                                   ctx.platform, ins, checks=job.checks)  # fmt: skip
        if link:
            copied = self.vertices.add(MergeOp(), (st.head, copied), "LINK " + description,
                                       ctx.platform, ins, internal=True)  # fmt: skip
        st.stepped(copied, " ".join(history) + " # buildkit", description, ins)

    def _local(self, job: _Copying, local: list[str], is_add: bool) -> str:
        """Paths from the context, or from `--from=`: returns the `--from=` shown."""
        ins = job.ins
        origin = ins.flag("from")
        if origin is not None and self.words.lexer.process_word(origin, {}) != origin:
            raise error_at(
                ins, "variable expansion is not supported for --from, define a new stage with "
                "FROM using ARG from global scope as a workaround",
            )  # fmt: skip
        if origin is None:
            for source in local:
                self.lints.ignored_source_check(ins, source)
        if not local:
            return "" if origin is None else f"--from={origin} "
        shown_from = ""
        if origin is not None:
            key, shown, check = self.sources.from_input(origin, job.ctx, ins, tuple(local),
                                                        len(job.inputs))  # fmt: skip
            job.checks.extend([check] if check else [])
            shown_from = f"--from={shown} "
            from_context = self.vertices.from_context(key)
        else:
            key = self.vertices.context_selection(tuple(local), job.ctx.platform, ins)
            from_context = True
        unpack_flag = ins.flags.get("unpack")
        job.take(
            key, tuple(local), keep_owner=not from_context, parents=ins.bool_flag("parents"),
            excludes=tuple(ins.list_flag("exclude")),
            unpack=is_add if unpack_flag is None else unpack_flag is True,
        )  # fmt: skip
        return shown_from

    def _gits(self, job: _Copying, gits: list[tuple[str, GitRef]], checksum: str) -> None:
        ins = job.ins
        keep_flag = ins.flags.get("keep-git-dir")
        keep_git_dir = None if keep_flag is None else ins.bool_flag("keep-git-dir")
        for text, git in gits:
            if (
                keep_git_dir is not None
                and git.keep_git_dir is not None
                and (keep_git_dir != git.keep_git_dir)
            ):
                raise error_at(ins, "inconsistent keep-git-dir configuration")
            if checksum and git.checksum and checksum != git.checksum:
                raise error_at(ins, f"checksum mismatch {checksum!r} != {git.checksum!r}")
            if checksum and not re.fullmatch(r"[0-9a-f]{7,64}", checksum):
                raise error_at(ins, f"invalid checksum {checksum!r}: a git source's checksum "
                                    "is its commit (hex)")  # fmt: skip
            keep = keep_git_dir if keep_git_dir is not None else git.keep_git_dir
            key = self.vertices.git_source(
                git, f"ADD {text}", job.ctx.platform, ins, keep=bool(keep),
                checksum=checksum or git.checksum,
            )  # fmt: skip
            job.take(key, ("/",))

    def _inline(self, job: _Copying, inline: tuple[Heredoc, ...], st: State) -> None:
        if not inline:
            return
        docs: list[Mkfile] = []
        for doc in inline:
            data = (self.words.expand_raw(doc.content, st.env, job.ins) if doc.expand
                    else doc.content)  # fmt: skip
            docs.append(Mkfile(doc.name, data, 0o644))
        scratch = (self.vertices.scratch(job.ctx.platform),)
        key = self.vertices.add(FileOp(tuple(docs)), scratch, "preparing inline document",
                                job.ctx.platform, job.ins, internal=True)  # fmt: skip
        job.inputs.append(key)
        for doc in inline:
            job.actions.append(Copy(len(job.inputs) - 1, (doc.name,), job.dest, job.chown,
                                    job.chmod, link=job.link))  # fmt: skip


def _kinds(
    sources: list[str], is_add: bool, checksum: str, ins: Instruction
) -> tuple[list[tuple[str, GitRef]], list[str], list[str]]:
    """The sources by kind (git repositories, URLs, local paths), checked for the
    instruction: COPY takes neither git nor URLs; --checksum wants one remote source."""
    gits: list[tuple[str, GitRef]] = []
    for source in sources:
        try:
            git = parse_git_ref(source)
        except GitRefError as exc:
            raise error_at(ins, str(exc)) from None
        if git is not None:
            gits.append((source, git))
    if gits and not is_add:
        raise error_at(ins, "source can't be a git ref for COPY")
    git_sources = {text for text, _ in gits}
    urls = [s for s in sources if _is_url(s) and s not in git_sources]
    local = [s for s in sources if not _is_url(s) and s not in git_sources]
    if urls and not is_add:
        raise error_at(ins, "source can't be a URL for COPY")
    if checksum:
        if len(sources) != 1 or not (urls or gits):
            raise error_at(ins, "checksum requires HTTP(S) or Git sources")
        if urls and (not checksum.startswith("sha256:") or len(checksum) != 71):
            raise error_at(ins, f"invalid checksum {checksum!r}: want sha256:<64 hex>")
    return gits, urls, local


def _destination(written: str, st: State) -> str:
    dest = posixpath.join(st.workdir, written) if written else st.workdir
    if (written.endswith("/") or written in (".", "")) and not dest.endswith("/"):
        dest += "/"
    if dest.startswith("//"):
        dest = dest[1:]
    return dest


def _numeric_owner(chown: str) -> bool:
    return all(part.isdigit() for part in chown.split(":") if part)


def _valid_chmod(text: str) -> bool:
    try:
        return 0 <= int(text, 8) <= 0o7777
    except ValueError:
        return False


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _url_filename(url: str) -> str | None:
    """The name of ADD's downloaded file, as BuildKit makes it: the last segment of the URL's
    path, %-decoded (`__unnamed__` when there is none); None for `..` or a NUL, which name no
    file (BuildKit would write to `..`)."""
    path = url.split("://", 1)[1].partition("/")[2].split("?", 1)[0].split("#", 1)[0]
    decoded = urllib.parse.unquote(path)
    base = posixpath.basename(decoded.rstrip("/")) if decoded.rstrip("/") else ""
    if base == ".." or "\0" in base:
        return None
    return base if base not in ("", ".", "/") else "__unnamed__"
