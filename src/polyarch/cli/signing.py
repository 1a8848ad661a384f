"""`polyarch sign`: sign an image in cosign's format, or make a key pair as cosign does."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

import click

from polyarch.cli.common import open_session
from polyarch.errors import UsageError

KEYLESS = ("keyless signing (Fulcio certificates, Rekor transparency log) needs the sigstore "
           "services, which polyarch does not reach; sign with a key: polyarch sign "
           "--generate-key, then --key cosign.key")  # fmt: skip


def password(confirm: bool = False) -> bytes:
    """The key's password: COSIGN_PASSWORD (as cosign), else asked on the terminal."""
    given = os.environ.get("COSIGN_PASSWORD")
    if given is not None:
        return given.encode()
    if not sys.stdin.isatty():
        raise UsageError("the key's password: set COSIGN_PASSWORD (no terminal to ask on)")
    first = getpass.getpass("Enter password for private key: ")
    if confirm and getpass.getpass("Enter password for private key again: ") != first:
        raise UsageError("the passwords differ")
    return first.encode()


@click.command("sign")
@click.argument("ref", required=False)
@click.option("--key", "key", type=click.Path(dir_okay=False, path_type=Path),
              help="The private key (cosign.key, as cosign generate-key-pair makes it; its "
              "password from COSIGN_PASSWORD or asked).")  # fmt: skip
@click.option("--generate-key", "generate", is_flag=True,
              help="Write a new ECDSA P-256 key pair, cosign.key (encrypted) and cosign.pub, in "
              "the current directory, as cosign generate-key-pair does.")  # fmt: skip
@click.option("--recursive/--no-recursive", default=True, show_default=True,
              help="Sign each platform's image of an index too.")  # fmt: skip
@click.option("--new-bundle-format", "bundle", is_flag=True,
              help="Store the signatures as cosign v3 does with this flag: a Sigstore bundle "
              "(DSSE, in-toto statement) attached to each signed manifest as an OCI 1.1 "
              "referrer, instead of under the sha256-<hex>.sig tag.")  # fmt: skip
@click.option("--keyless", is_flag=True, hidden=True)
@click.pass_context
def sign_command(
    ctx: click.Context, ref: str | None, key: Path | None, generate: bool, recursive: bool,
    bundle: bool, keyless: bool,
) -> None:  # fmt: skip
    """Sign REF (an image or index on a registry) with a key, in the format cosign and
    containers/image read: the signature is stored under the repository's sha256-<hex>.sig
    tag (with --new-bundle-format, as a referrer, as cosign v3 stores it; the referrers tag
    sha256-<hex> where the registry has no referrers API); no other tag moves.

    \b
    Example:
      polyarch sign --generate-key
      polyarch sign --key cosign.key registry.lan/app:1.2.0
      polyarch verify --key cosign.pub registry.lan/app:1.2.0
    """
    from polyarch.api.signing import SignatureForm, generate_key_pair, sign_image  # noqa: PLC0415

    if keyless:
        raise UsageError(KEYLESS)
    if generate:
        if ref or key or bundle:
            raise UsageError("--generate-key takes no REF, --key or --new-bundle-format")
        private, public = generate_key_pair(Path.cwd(), password(confirm=True))
        click.echo(f"Private key written to {private}\nPublic key written to {public}")
        return
    if not ref:
        raise UsageError("sign needs REF (and --key KEY)")
    if key is None:
        raise UsageError(f"sign needs --key KEY; {KEYLESS}")
    try:
        pem = key.read_bytes()
    except OSError as exc:
        raise UsageError(f"--key {key}: {exc.strerror}") from None
    form = SignatureForm.BUNDLE if bundle else SignatureForm.TAG
    signed = sign_image(open_session(ctx), ref, pem, password(), recursive=recursive, form=form)
    for what, digest in signed:
        click.echo(f"signed {what} {digest}")
