"""SLSA Verification Summary Attestations (https://slsa.dev/verification_summary/v1) of what
`polyarch verify` saw for a platform's image: which checks and probes ran, natively or under
which emulator, what they saw, and whether it passed. Pure.

The policy is what verify was asked to check (the command, the probes, the architecture
check); its digest is of that JSON, so two results under the same policy compare. The
verifier is polyarch (`urn:polyarch:verify`, its version). `verifiedLevels` holds
`POLYARCH_VERIFIED` for a pass (a custom level: polyarch checks that the image runs, not a
SLSA build track) and `FAILED` otherwise, as the spec asks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

VERIFIER: Final = "urn:polyarch:verify"
POLICY: Final = "urn:polyarch:verify:policy"
PASSED_LEVEL: Final = "POLYARCH_VERIFIED"


def policy_digest(policy: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(policy, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()  # fmt: skip


def predicate(
    *,
    resource_uri: str,
    passed: bool,
    time_verified: str,
    version: str,
    policy: Mapping[str, Any],
    runner: str,
    checks: Sequence[str],
    probes: Mapping[str, str],
    failures: Sequence[str],
) -> dict[str, Any]:
    return {
        "verifier": {"id": VERIFIER, "version": {"polyarch": version}},
        "timeVerified": time_verified,
        "resourceUri": resource_uri,
        "policy": {"uri": POLICY, "digest": {"sha256": policy_digest(policy)}},
        "verificationResult": "PASSED" if passed else "FAILED",
        "verifiedLevels": [PASSED_LEVEL] if passed else ["FAILED"],
        "slsaVersion": "1.0",
        "polyarch_verify": {"policy": dict(policy), "ran": runner, "checks": list(checks),
                            "probes": dict(probes), "failures": list(failures)},
    }  # fmt: skip


def passes(predicate_: Mapping[str, Any], policy: Mapping[str, Any] | None = None) -> bool:
    """A summary polyarch made that says PASSED (under `policy`, when given)."""
    verifier = predicate_.get("verifier")
    if not isinstance(verifier, dict) or verifier.get("id") != VERIFIER:
        return False
    if predicate_.get("verificationResult") != "PASSED":
        return False
    if policy is not None:
        digest = predicate_.get("policy", {}).get("digest", {}).get("sha256")
        return bool(digest == policy_digest(policy))
    return True
