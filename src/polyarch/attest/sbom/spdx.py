"""An SPDX 2.3 JSON document of an image's packages (the predicate of BuildKit's
`https://spdx.dev/Document` attestations). Pure.

The document describes the image (a package named as the image, its version the manifest
digest) which CONTAINS every package found. Declared licences are made SPDX expressions:
SPDX ids as they are, Debian's and the Python classifiers' usual names mapped to ids, anything
else as a `LicenseRef-` with its text in `hasExtractedLicensingInfos` (so the document stays
valid). Its namespace is derived from the image's digest, so it is reproducible."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any, Final

from polyarch.attest.sbom.packages import Package

# Names the metadata uses that are not SPDX ids (Debian's DEP-5 short names, Python's trove
# classifiers, common spellings), mapped to the SPDX id.
_KNOWN: Final = {
    "gpl-1": "GPL-1.0-only", "gpl-1+": "GPL-1.0-or-later", "gpl-2": "GPL-2.0-only",
    "gpl-2+": "GPL-2.0-or-later", "gpl-3": "GPL-3.0-only", "gpl-3+": "GPL-3.0-or-later",
    "lgpl-2": "LGPL-2.0-only", "lgpl-2+": "LGPL-2.0-or-later", "lgpl-2.1": "LGPL-2.1-only",
    "lgpl-2.1+": "LGPL-2.1-or-later", "lgpl-3": "LGPL-3.0-only", "lgpl-3+": "LGPL-3.0-or-later",
    "agpl-3": "AGPL-3.0-only", "agpl-3+": "AGPL-3.0-or-later", "gfdl-1.2": "GFDL-1.2-only",
    "gfdl-1.2+": "GFDL-1.2-or-later", "gfdl-1.3": "GFDL-1.3-only",
    "gfdl-1.3+": "GFDL-1.3-or-later", "expat": "MIT", "mit license": "MIT",
    "bsd-2-clause": "BSD-2-Clause", "bsd-3-clause": "BSD-3-Clause",
    "bsd-4-clause": "BSD-4-Clause", "apache-2": "Apache-2.0", "apache-2.0": "Apache-2.0",
    "apache software license": "Apache-2.0", "apache license 2.0": "Apache-2.0",
    "mpl-1.1": "MPL-1.1", "mpl-2.0": "MPL-2.0", "artistic": "Artistic-1.0-Perl",
    "artistic-2": "Artistic-2.0", "zlib": "Zlib", "isc": "ISC", "isc license (iscl)": "ISC",
    "psf": "PSF-2.0", "python software foundation license": "PSF-2.0",
    "0bsd": "0BSD", "unlicense": "Unlicense", "the unlicense (unlicense)": "Unlicense",
    "mozilla public license 2.0 (mpl 2.0)": "MPL-2.0", "cc0-1.0": "CC0-1.0",
    "gnu general public license v2 (gplv2)": "GPL-2.0-only",
    "gnu general public license v3 (gplv3)": "GPL-3.0-only",
    "gnu lesser general public license v2 (lgplv2)": "LGPL-2.0-only",
    "gnu lesser general public license v3 (lgplv3)": "LGPL-3.0-only",
}  # fmt: skip
_REF_CHARS: Final = re.compile(r"[^A-Za-z0-9.-]+")
_LONGEST: Final = 200  # a declared licence is cut there (a whole licence text is no name)


class _Licences:
    def __init__(self) -> None:
        from license_expression import (  # type: ignore[import-untyped]  # noqa: PLC0415
            get_spdx_licensing,
        )

        self.licensing = get_spdx_licensing()
        self.refs: dict[str, str] = {}  # LicenseRef id -> the name it stands for

    def one(self, name: str) -> str:
        name = name.strip().strip("()")[:_LONGEST]
        known = _KNOWN.get(name.lower())
        if known:
            return known
        try:
            parsed = self.licensing.parse(name, validate=True, strict=True)
        except Exception:
            parsed = None
        if parsed is not None:
            return str(parsed.render())
        ref = "LicenseRef-" + (_REF_CHARS.sub("-", name).strip("-") or "unknown")
        self.refs.setdefault(ref, name)
        return ref

    def expression(self, names: Sequence[str]) -> str:
        ids = list(dict.fromkeys(self.one(n) for n in names if n.strip()))
        if not ids:
            return "NOASSERTION"
        if len(ids) == 1:
            return ids[0]
        return " AND ".join(f"({i})" if " " in i else i for i in ids)


def _spdx_id(prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    return f"SPDXRef-{prefix}-{_REF_CHARS.sub('-', parts[0]).strip('-')[:60]}-{digest}"


def document(
    packages: Sequence[Package],
    *,
    image_name: str,
    image_purl: str,
    manifest_digest: str,
    created: str,
    tool: str,
    part: str = "",
) -> dict[str, Any]:
    """The SPDX 2.3 document (a JSON object) of `packages`, found in the image
    `image_name` whose manifest is `manifest_digest` (or, `part`, in one of the stages it
    was built from or its build context)."""
    licences = _Licences()
    root_id = _spdx_id("DocumentRoot-Image", image_name, manifest_digest)
    entries: list[dict[str, Any]] = [{
        "name": image_name, "SPDXID": root_id, "versionInfo": manifest_digest,
        "downloadLocation": "NOASSERTION", "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION", "primaryPackagePurpose": "CONTAINER",
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": image_purl}],
    }]  # fmt: skip
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                      "relatedSpdxElement": root_id}]  # fmt: skip
    seen: set[str] = set()
    for package in sorted(packages, key=lambda p: (p.kind, p.name, p.version, p.found_at)):
        spdx_id = _spdx_id("Package", f"{package.kind}-{package.name}", package.purl,
                           package.found_at)  # fmt: skip
        if spdx_id in seen:
            continue
        seen.add(spdx_id)
        entry: dict[str, Any] = {
            "name": package.name, "SPDXID": spdx_id, "versionInfo": package.version or
            "NOASSERTION", "downloadLocation": "NOASSERTION", "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": licences.expression(package.licenses),
            "copyrightText": "NOASSERTION",
            "sourceInfo": f"{package.kind} package metadata: /{package.found_at}",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER",
                              "referenceType": "purl", "referenceLocator": package.purl}],
        }  # fmt: skip
        if package.homepage.startswith(("http://", "https://")):
            entry["homepage"] = package.homepage
        entries.append(entry)
        relationships.append({"spdxElementId": root_id, "relationshipType": "CONTAINS",
                              "relatedSpdxElement": spdx_id})  # fmt: skip
    hex_ = manifest_digest.partition(":")[2] or hashlib.sha256(image_name.encode()).hexdigest()
    doc: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{image_name} ({part})" if part else image_name,
        "documentNamespace": f"https://spdx.org/spdxdocs/polyarch-{hex_}"
        + (f"-{_REF_CHARS.sub('-', part)}" if part else ""),
        "creationInfo": {"created": created, "creators": [f"Tool: {tool}"]},
        "packages": entries, "relationships": relationships,
    }  # fmt: skip
    if licences.refs:
        doc["hasExtractedLicensingInfos"] = [
            {"licenseId": ref, "name": name, "extractedText": name}
            for ref, name in sorted(licences.refs.items())
        ]
    return doc
