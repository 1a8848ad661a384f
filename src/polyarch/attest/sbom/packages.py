"""Package databases and manifests read into packages: dpkg's status (Debian, Ubuntu; also
distroless's `status.d`), apk's installed database (Alpine), the RPM database (`rpmdb.sqlite`
headers), Python's installed distributions (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO`),
npm packages (`node_modules/**/package.json`) and Go binaries' embedded build information.
Pure: each reader takes bytes and returns packages; what is not understood is skipped.
Package URLs follow the purl spec's types (deb, apk, rpm, pypi, npm, golang)."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.parser import HeaderParser
from typing import Final

from packageurl import PackageURL


@dataclass(frozen=True, slots=True)
class Package:
    kind: str  # deb, apk, rpm, python, npm, go-module
    name: str
    version: str
    purl: str
    licenses: tuple[str, ...] = ()  # as the metadata declares them (not yet SPDX ids)
    found_at: str = ""  # the file it was read from
    supplier: str = ""
    homepage: str = ""


@dataclass(frozen=True, slots=True)
class Distro:
    """/etc/os-release's ID and VERSION_ID."""

    id: str = ""
    version_id: str = ""

    @property
    def qualifier(self) -> str:
        return f"{self.id}-{self.version_id}" if self.version_id else self.id


def os_release(text: str) -> Distro:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("\"'")
    return Distro(values.get("ID", ""), values.get("VERSION_ID", ""))


def _paragraphs(text: str) -> Iterator[dict[str, str]]:
    """RFC 822-style stanzas (dpkg's status): `Key: value`, continuation lines indented."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, ""
        elif line[0] in " \t":
            if key:
                fields[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    if fields:
        yield fields


def _purl(kind: str, namespace: str | None, name: str, version: str,
          qualifiers: Mapping[str, str] | None = None) -> str:  # fmt: skip
    kept = {k: v for k, v in (qualifiers or {}).items() if v}
    return PackageURL(type=kind, namespace=namespace or None, name=name,
                      version=version or None, qualifiers=kept or None).to_string()  # fmt: skip


def dpkg_status(
    text: str, distro: Distro, where: str, licenses: Mapping[str, tuple[str, ...]] | None = None
) -> list[Package]:
    """Installed packages of a dpkg status file (`licenses`: per package, from its
    /usr/share/doc/PACKAGE/copyright)."""
    out: list[Package] = []
    for fields in _paragraphs(text):
        name, version = fields.get("Package", ""), fields.get("Version", "")
        status = fields.get("Status", "install ok installed").split()
        if not name or not version or "installed" not in status[-1:]:
            continue
        arch = fields.get("Architecture", "")
        source = fields.get("Source", "").split(" ")[0]
        qualifiers = {"arch": arch, "upstream": source if source and source != name else "",
                      "distro": distro.qualifier}  # fmt: skip
        out.append(Package("deb", name, version,
                           _purl("deb", distro.id or "debian", name, version, qualifiers),
                           tuple((licenses or {}).get(name, ())), where,
                           fields.get("Maintainer", ""), fields.get("Homepage", "")))  # fmt: skip
    return out


_DEP5_LICENSE: Final = re.compile(r"^License:[ \t]*(\S[^\n]*)$", re.MULTILINE)


def debian_copyright(text: str) -> tuple[str, ...]:
    """The licences a machine-readable (DEP-5) copyright file names, in order, once each."""
    found: dict[str, None] = {}
    for match in _DEP5_LICENSE.finditer(text):
        for part in re.split(r"\s+(?:or|and)\s+|\s*[|,]\s*", match.group(1).strip(), flags=re.I):
            if part and part.lower() not in ("with", "exception"):
                found.setdefault(part)
    return tuple(found)


def apk_installed(text: str, distro: Distro, where: str) -> list[Package]:
    out: list[Package] = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep and len(key) == 1 and key not in fields:
                fields[key] = value
        name, version = fields.get("P", ""), fields.get("V", "")
        if not name or not version:
            continue
        qualifiers = {
            "arch": fields.get("A", ""),
            "distro": distro.qualifier,
            "upstream": fields.get("o", "") if fields.get("o") != name else "",
        }
        licenses = tuple(fields["L"].split()) if fields.get("L") else ()
        out.append(Package("apk", name, version,
                           _purl("apk", distro.id or "alpine", name, version, qualifiers),
                           tuple(x for x in licenses if x.upper() not in ("AND", "OR")),
                           where, fields.get("m", ""), fields.get("U", "")))  # fmt: skip
    return out


def python_metadata(text: str, where: str) -> Package | None:
    """A distribution's METADATA or PKG-INFO (email headers)."""
    headers = HeaderParser().parsestr(text, headersonly=True)
    name, version = headers.get("Name", ""), headers.get("Version", "")
    if not name or not version:
        return None
    licenses: list[str] = []
    expression = headers.get("License-Expression", "")
    if expression:
        licenses.append(expression.strip())
    else:
        for classifier in headers.get_all("Classifier", []):
            if classifier.startswith("License ::"):
                licenses.append(classifier.split("::")[-1].strip())
        declared = headers.get("License", "")
        if not licenses and declared and "\n" not in declared.strip() and len(declared) < 80:
            licenses.append(declared.strip())
    normalized = re.sub(r"[-_.]+", "-", name).lower()
    return Package("python", name, version, _purl("pypi", None, normalized, version),
                   tuple(licenses), where, headers.get("Author", "") or "",
                   headers.get("Home-page", "") or "")  # fmt: skip


def npm_package(raw: bytes, where: str) -> Package | None:
    """A package's package.json under node_modules."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    name, version = doc.get("name"), doc.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return None
    scope, _, bare = name.rpartition("/")
    licenses: list[str] = []
    declared = doc.get("license")
    if isinstance(declared, dict):
        declared = declared.get("type")
    if isinstance(declared, str) and declared:
        licenses.append(declared)
    elif isinstance(doc.get("licenses"), list):
        for item in doc["licenses"]:
            value = item.get("type") if isinstance(item, dict) else item
            if isinstance(value, str) and value:
                licenses.append(value)
    homepage = doc.get("homepage") if isinstance(doc.get("homepage"), str) else ""
    author = doc.get("author")
    supplier = author if isinstance(author, str) else (
        author.get("name", "") if isinstance(author, dict) else "")  # fmt: skip
    return Package("npm", name, version, _purl("npm", scope or None, bare, version),
                   tuple(licenses), where, str(supplier or ""), str(homepage or ""))  # fmt: skip


def npm_lock(raw: bytes, where: str) -> list[Package]:
    """The packages a package-lock.json (lockfileVersion 2 or 3) pins."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    out: list[Package] = []
    entries = doc.get("packages") if isinstance(doc, dict) else None
    for path, entry in (entries or {}).items() if isinstance(entries, dict) else ():
        if not path or not isinstance(entry, dict) or "node_modules/" not in path:
            continue
        name = entry.get("name") or path.rpartition("node_modules/")[2]
        version = entry.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            continue
        scope, _, bare = name.rpartition("/")
        licence = entry.get("license")
        out.append(Package("npm", name, version, _purl("npm", scope or None, bare, version),
                           (licence,) if isinstance(licence, str) else (), where))  # fmt: skip
    return out


_PIN: Final = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")


def requirements(text: str, where: str) -> list[Package]:
    """The pinned packages (`name==version`) of a requirements.txt."""
    out: list[Package] = []
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            name, version = match.groups()
            normalized = re.sub(r"[-_.]+", "-", name).lower()
            out.append(Package("python", name, version, _purl("pypi", None, normalized, version),
                               (), where))  # fmt: skip
    return out


GO_MAGIC: Final = b"\xff Go buildinf:"
_GO_SENTINEL: Final = 16  # modinfo is framed by 16 bytes on each side


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("bad varint")


def go_buildinfo(blob: bytes, where: str) -> list[Package]:
    """A Go binary's modules, from the build information Go 1.18+ embeds (inline strings:
    the 32-byte header starting with the magic, then the Go version and the module info as
    length-prefixed strings). Older binaries are skipped."""
    at = blob.find(GO_MAGIC)
    if at < 0 or len(blob) < at + 32 or not blob[at + 15] & 0x2:
        return []
    try:
        length, pos = _uvarint(blob, at + 32)
        pos += length  # the Go version
        length, pos = _uvarint(blob, pos)
        info = blob[pos : pos + length]
    except ValueError:
        return []
    if len(info) < 2 * _GO_SENTINEL:
        return []
    text = info[_GO_SENTINEL:-_GO_SENTINEL].decode("utf-8", "replace")
    out: list[Package] = []
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] in ("mod", "dep") and len(parts) >= 3:
            path, version = parts[1], parts[2]
            if version == "(devel)":
                version = ""
            namespace, _, name = path.rpartition("/")
            out.append(Package("go-module", path, version,
                               _purl("golang", namespace or None, name, version), (),
                               where))  # fmt: skip
    return out


# RPM header tags (rpm's lib/rpmtag.h)
_RPM_TAGS: Final = {1000: "name", 1001: "version", 1002: "release", 1003: "epoch",
                    1014: "license", 1022: "arch", 1011: "vendor", 1020: "url"}  # fmt: skip


def rpm_header(blob: bytes) -> dict[str, str]:
    """The fields of an RPM header blob (as `rpmdb.sqlite` keeps them: index count, data
    size, then 16-byte index entries and the data store) that name a package."""
    if len(blob) < 8:
        return {}
    count, size = struct.unpack(">II", blob[:8])
    store = 8 + 16 * count
    if count > 100_000 or store + size > len(blob):
        return {}
    out: dict[str, str] = {}
    for i in range(count):
        tag, kind, offset, _n = struct.unpack(">IIiI", blob[8 + 16 * i : 24 + 16 * i])
        name = _RPM_TAGS.get(tag)
        if name is None or not 0 <= offset < size:
            continue
        start = store + offset
        if kind in (6, 8, 9):  # string, string array (first), i18n string (first)
            end = blob.find(b"\0", start, store + size)
            out[name] = blob[start : end if end >= 0 else store + size].decode("utf-8", "replace")
        elif kind == 4 and start + 4 <= store + size:  # int32 (epoch)
            out[name] = str(struct.unpack(">I", blob[start : start + 4])[0])
    return out


def rpm_packages(headers: list[bytes], distro: Distro, where: str) -> list[Package]:
    out: list[Package] = []
    for blob in headers:
        fields = rpm_header(blob)
        name = fields.get("name", "")
        if not name or name == "gpg-pubkey":
            continue
        version = fields.get("version", "")
        if fields.get("release"):
            version = f"{version}-{fields['release']}"
        qualifiers = {"arch": fields.get("arch", ""), "epoch": fields.get("epoch", ""),
                      "distro": distro.qualifier}  # fmt: skip
        licenses = (fields["license"],) if fields.get("license") else ()
        out.append(
            Package(
                "rpm",
                name,
                version,
                _purl("rpm", distro.id or None, name, version, qualifiers),
                licenses,
                where,
                fields.get("vendor", ""),
                fields.get("url", ""),
            )
        )
    return out
