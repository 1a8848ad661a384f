"""Supply-chain attestations: SLSA provenance and SPDX SBOMs as in-toto statements, stored in
the image index as BuildKit stores them (`docs/attestations/attestation-storage.md`).

Pure: `spec` (the flags), `intoto` (statements, package URLs), `provenance` (the predicate),
`sbom.packages` (package databases read), `sbom.spdx` (the document). Effects: `sbom.scan`
(an image's layers read) and `store` (attestation manifests written, the index remade)."""
