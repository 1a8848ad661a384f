"""Credentials on a registry's requests: basic, or bearer tokens from the realm it names.

`Tokens` answers the auth flow (`auth.RegistryAuth`) with the `Authorization` a request needs:
the credential found for the registry (docker's config and helpers), a token fetched for the
request's scopes and kept until shortly before it expires, or a token a provider gives (a
builder's node, whose client keeps the credentials: BuildKit's auth provider). Tokens are asked
only of the realm the registry's own challenge names, over https unless that host may be plain.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Final, Protocol, TypeVar

import httpx

from polyarch.errors import (
    AuthenticationError,
    InsecureTransportError,
    RegistryError,
    RegistryUnavailableError,
)
from polyarch.registry.auth import Challenge, repository_scope
from polyarch.registry.credentials import ANONYMOUS, Credential, CredentialSource
from polyarch.registry.endpoint import TRANSIENT, Endpoint, Retry, Token, error_from
from polyarch.registry.retry import RETRY_STATUSES, Budget, parse_retry_after
from polyarch.registry.transport import LIMIT, read_body

_MAX_TOKEN_BODY: Final = 1024 * 1024
T = TypeVar("T")

TokenProvider = Callable[[str, list[str]], tuple[str, float] | None]


class Http(Protocol):
    """What fetching a token needs of the connection."""

    @property
    def user_agent(self) -> str: ...

    def client(self, url: httpx.URL) -> httpx.Client: ...

    def tries(self, attempt: Callable[[Budget], T]) -> T: ...

    def plain_http_allowed(self, host: str) -> bool: ...


class Tokens:
    def __init__(
        self, credentials: CredentialSource | None, http: Http, clock: Callable[[], float]
    ) -> None:
        self._credentials = credentials
        self._http = http
        self._clock = clock
        # Asked for a bearer token (host, scopes -> token and seconds it lasts, or None) for a
        # registry there are no credentials for here.
        self.provider: TokenProvider | None = None

    def credential(self, endpoint: Endpoint) -> Credential:
        if endpoint.credential is None:
            source = self._credentials
            endpoint.credential = source.get(endpoint.host) if source else ANONYMOUS
        return endpoint.credential

    def authorization(self, endpoint: Endpoint, scopes: Sequence[str]) -> str | None:
        """The `Authorization` header for a request with these scopes (None: anonymous)."""
        with endpoint.lock:
            challenge = endpoint.challenge
            if challenge is None:
                return None
            credential = self.credential(endpoint)
            if challenge.scheme == "basic":
                if credential.username is not None and credential.password is not None:
                    pair = f"{credential.username}:{credential.password}".encode()
                    return "Basic " + base64.b64encode(pair).decode("ascii")
                return None
            if credential.registry_token:
                return f"Bearer {credential.registry_token}"
            key = frozenset(scopes)
            token = endpoint.tokens.get(key)
            if token is None or token.expires_at <= self._clock():
                token = self._provided(endpoint, credential, list(scopes))
                if token is None:
                    token = self.fetch(endpoint, challenge, credential, list(scopes))
                endpoint.tokens[key] = token
            return f"Bearer {token.value}"

    def unauthorized(self, endpoint: Endpoint, error: RegistryError) -> RegistryError:
        """A 401 that stands: say whether credentials were sent and refused, or none found."""
        credential = self.credential(endpoint)
        base = error.message.split("; log in with", 1)[0]
        if credential.is_anonymous:
            text = (f"{base}; no credentials for {endpoint.host} were found: log in with "
                    "`docker login` (polyarch reads docker's config.json and credential "
                    "helpers) or pass --authfile")  # fmt: skip
        else:
            who = f" for user {credential.username!r}" if credential.username else ""
            text = (f"{base}; the registry rejected the credentials{who} from "
                    f"{credential.source or 'the credential store'}: log in again")  # fmt: skip
        return AuthenticationError(text, status=error.status, code=error.code,
                                   reference=error.reference, detail=error.detail)  # fmt: skip

    def pull_token(self, endpoint: Endpoint, scopes: Sequence[str]) -> tuple[str, float] | None:
        """A bearer token for pulling from the endpoint's registry (each repository scope
        narrowed to `pull`), fetched with the credentials here from the token service the
        registry itself names, and how many seconds it lasts; None when the registry does not
        use tokens or there are no credentials for it here."""
        challenge = endpoint.challenge
        if challenge is None or challenge.scheme != "bearer":
            return None
        credential = self.credential(endpoint)
        if credential.is_anonymous:
            return None
        if credential.registry_token:  # docker's `registrytoken`: given as BuildKit gives it
            return credential.registry_token, 60.0
        pulls = sorted({repository_scope(scope.split(":")[1], "pull") for scope in scopes
                        if scope.startswith("repository:") and scope.count(":") >= 2})  # fmt: skip
        if not pulls:
            return None
        token = self.fetch(endpoint, challenge, credential, pulls)
        return token.value, max(token.expires_at - self._clock() + 10.0, 1.0)

    def _provided(
        self, endpoint: Endpoint, credential: Credential, scopes: list[str]
    ) -> Token | None:
        if self.provider is None or not credential.is_anonymous:
            return None
        given = self.provider(endpoint.host, scopes)
        if given is None:  # the provider has no credentials for it either: anonymous
            return None
        value, lasts = given
        return Token(value, self._clock() + max(lasts - 10.0, 1.0))

    def fetch(
        self, endpoint: Endpoint, challenge: Challenge, credential: Credential, scopes: list[str]
    ) -> Token:
        """A token for `scopes` from the challenge's realm, with retries."""
        realm_url = self._realm(endpoint, challenge)
        realm_host = realm_url.netloc.decode("ascii")
        client = self._http.client(realm_url)

        def attempt(_budget: Budget) -> Token:
            request = self._request(client, realm_url, challenge, credential, scopes)
            try:
                resp = client.send(request, stream=True)
            except TRANSIENT as exc:
                raise Retry(RegistryUnavailableError(
                    f"cannot reach token service {realm_host}: {exc}", reference=endpoint.host
                )) from None  # fmt: skip
            try:
                if resp.status_code in RETRY_STATUSES:
                    raise Retry(
                        error_from(resp, f"token request to {realm_host} failed", endpoint.host),
                        parse_retry_after(resp.headers.get("Retry-After")),
                    )
                return self._read(resp, realm_host, credential, endpoint)
            except TRANSIENT as exc:
                raise Retry(RegistryUnavailableError(
                    f"token service {realm_host} stopped answering: {exc}", reference=endpoint.host
                )) from None  # fmt: skip
            finally:
                resp.close()

        return self._http.tries(attempt)

    def _realm(self, endpoint: Endpoint, challenge: Challenge) -> httpx.URL:
        realm = challenge.realm
        if not realm:
            raise AuthenticationError(
                "registry sent a bearer challenge without a realm", reference=endpoint.host
            )
        realm_url = httpx.URL(realm)
        realm_host = realm_url.netloc.decode("ascii")
        if realm_url.scheme != "https" and not (
            realm_url.scheme == "http" and self._http.plain_http_allowed(realm_host)
        ):
            raise InsecureTransportError(
                f"token realm {realm_url.scheme}://{realm_host} is not https; refusing to ask "
                "it for a token (configure the registry as insecure if this is intended)",
                reference=endpoint.host,
            )
        return realm_url

    def _request(
        self,
        client: httpx.Client,
        realm_url: httpx.URL,
        challenge: Challenge,
        credential: Credential,
        scopes: list[str],
    ) -> httpx.Request:
        """The token request: an OAuth2 refresh with an identity token, else a GET with basic
        credentials (or none). Its answer is read at most `_MAX_TOKEN_BODY` bytes."""
        extensions = {LIMIT: _MAX_TOKEN_BODY}
        headers = {"User-Agent": self._http.user_agent}
        if credential.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": credential.identity_token,
                "client_id": "polyarch",
                "scope": " ".join(scopes),
            }
            if challenge.service:
                form["service"] = challenge.service
            return client.build_request("POST", realm_url, data=form, headers=headers,
                                        extensions=extensions)  # fmt: skip
        query: list[tuple[str, str | int | float | bool | None]] = [
            *realm_url.params.multi_items(),
            *([("service", challenge.service)] if challenge.service else []),
            *(("scope", s) for s in scopes),
        ]
        if credential.username is not None and credential.password is not None:
            pair = f"{credential.username}:{credential.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return client.build_request(
            "GET", realm_url.copy_with(params=httpx.QueryParams(query)), headers=headers,
            extensions=extensions,
        )  # fmt: skip

    def _read(
        self, resp: httpx.Response, realm_host: str, credential: Credential, endpoint: Endpoint
    ) -> Token:
        if resp.status_code in (401, 403):
            raise AuthenticationError(
                f"token service {realm_host} refused "
                + ("the credentials" if not credential.is_anonymous else "anonymous access")
                + f" for {endpoint.host}",
                status=resp.status_code,
                reference=endpoint.host,
            )
        if resp.status_code != 200:
            raise error_from(resp, f"token request to {realm_host} failed", endpoint.host)
        try:
            data = json.loads(read_body(resp, _MAX_TOKEN_BODY, f"token from {realm_host}"))
            value = data.get("token") or data.get("access_token")
            expires_in = data.get("expires_in", 60)
        except (ValueError, AttributeError):
            raise AuthenticationError(
                f"token service {realm_host} answered with invalid JSON", reference=endpoint.host
            ) from None
        if not isinstance(value, str) or not value:
            raise AuthenticationError(
                f"token service {realm_host} gave no token", reference=endpoint.host
            )
        if not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = 60
        # Renew a little early so a token never expires between check and use.
        return Token(value, self._clock() + max(float(expires_in) - 10.0, 1.0))
