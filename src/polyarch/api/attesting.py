"""What `verify` saw, kept by the registry: each platform's result attached to its image as a
SLSA Verification Summary Attestation (`polyarch.attest.vsa`), an OCI 1.1 referrer of the
platform's manifest (BuildKit's attestation-manifest form, with `subject`), so the image's
digest does not change; and found again by `verify --require-attested`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from polyarch import __version__
from polyarch.api.session import Session, registry_location
from polyarch.attest import intoto, vsa
from polyarch.attest.store import attestation_document
from polyarch.digest import Digest
from polyarch.platform import Platform
from polyarch.reference import Reference
from polyarch.registry.referrers import push_referrer

if TYPE_CHECKING:
    from polyarch.verify import RunSpec, VerifyReport


def verify_policy(run: RunSpec | None, arch_check: bool) -> dict[str, Any]:
    """What verify was asked to check (a summary's policy)."""
    return {"run": run is not None, "command": run.command if run else None,
            "probes": [f"{p}={p.status}" + (f"~{p.text}" if p.text else "")
                       for p in (run.probes if run else ())],
            "arch_check": arch_check}  # fmt: skip


def _registry_ref(location: str) -> Reference:
    return registry_location(location, "verification results are kept")


def attach_verification(
    session: Session, location: str, report: VerifyReport, policy: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """Each platform's result attached to its image as a referrer; returns (platform, the
    summary's manifest digest)."""
    ref = _registry_ref(location)
    repository = Reference(ref.registry, ref.repository)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    attached = []
    for result in report.results:
        if not result.digest:
            continue
        digest = Digest.parse(result.digest)
        target = session.client.head_manifest(ref.with_digest(digest))
        if target is None:
            continue
        platform = Platform.parse(result.platform)
        body = vsa.predicate(
            resource_uri=intoto.image_purl(repository.with_digest(digest), platform),
            passed=result.ok, time_verified=now, version=__version__, policy=policy,
            runner=result.run, checks=result.checks, probes=result.probes,
            failures=result.failures,
        )  # fmt: skip
        named = repository.with_tag(ref.tag) if ref.tag else repository.with_digest(digest)
        subject = intoto.subjects([named], platform, digest)
        statement = intoto.statement(intoto.PREDICATE_VSA, subject, body)
        manifest, blobs = attestation_document(target, [statement])
        push_referrer(session.client, ref, manifest, blobs)
        attached.append((result.platform, str(manifest.digest)))
    return attached


def _summary_of(statement: Mapping[str, Any] | None, digest: str) -> dict[str, Any] | None:
    """The verification summary a statement holds, when it names the manifest `digest`."""
    if statement is None or statement.get("predicateType") != intoto.PREDICATE_VSA:
        return None
    subjects = statement.get("subject")
    algorithm, _, hex_ = digest.partition(":")
    named = isinstance(subjects, list) and any(
        isinstance(s, dict) and isinstance(s.get("digest"), dict)
        and s["digest"].get(algorithm) == hex_ for s in subjects)  # fmt: skip
    predicate = statement.get("predicate")
    return predicate if named and isinstance(predicate, dict) else None


def require_attested(
    session: Session, location: str, platforms: Sequence[Platform] = ()
) -> VerifyReport:
    """`verify --require-attested`: each platform of the image passes when its digest
    already carries a passing summary made by polyarch; nothing is run."""
    from polyarch.oci.models import Index  # noqa: PLC0415
    from polyarch.verify import PlatformResult, VerifyReport  # noqa: PLC0415

    ref = _registry_ref(location)
    fetched = session.client.get_manifest(ref)
    document = fetched.document
    entries: list[tuple[Platform | None, Digest]]
    if isinstance(document, Index):
        entries = [(d.platform, d.digest) for d in document.images() if d.platform]
    else:
        entries = [(None, fetched.digest)]
    report = VerifyReport(str(ref), str(fetched.digest), [])
    have = {p for p, _d in entries}
    for want in platforms:
        if not any(p is not None and want.matches(p) for p in have):
            report.problems.append(f"no image for {want}")
    attached = session.attestations(location, read=(intoto.PREDICATE_VSA,))
    for platform, digest in entries:
        result = PlatformResult(str(platform or "image"), str(digest))
        found = [_summary_of(a.statement, str(digest)) for a in attached
                 if a.subject == str(digest)]  # fmt: skip
        passing = [s for s in found if s is not None and vsa.passes(s)]
        if passing:
            latest = max(passing, key=lambda s: str(s.get("timeVerified", "")))
            result.checks.append("attested")
            result.run = f"verified {latest.get('timeVerified', '?')}"
        else:
            result.failures.append(
                "no passing verification summary is attached to "
                f"{digest}: run polyarch verify --attest first"
            )
        report.results.append(result)
    return report
