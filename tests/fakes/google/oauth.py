"""Google's OAuth 2.0 server for web apps: consent redirect, token endpoint, revoke, certs."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import time
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import parse_qsl, urlencode, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from .errors import Reply
from .store import Ids

SCOPE_ROOT = "https://www.googleapis.com/auth/"
# Short names Google accepts in `scope`, and what it writes back in the granted `scope`.
SCOPE_ALIASES = {"email": SCOPE_ROOT + "userinfo.email", "profile": SCOPE_ROOT + "userinfo.profile"}
KNOWN_SCOPES = frozenset(
    {"openid", "https://mail.google.com/"}
    | {SCOPE_ROOT + s for s in (
        "gmail.readonly", "gmail.send", "gmail.modify", "gmail.metadata", "gmail.compose",
        "gmail.labels", "gmail.insert", "drive", "drive.readonly", "drive.file",
        "drive.metadata.readonly", "drive.metadata", "userinfo.email", "userinfo.profile",
    )}
)
CODE_SECONDS = 600


@dataclass
class Grant:
    email: str
    client_id: str
    scopes: set[str]
    refresh_token: str
    revoked: bool = False


@dataclass
class AccessToken:
    grant: Grant
    scopes: frozenset[str]
    expires_at: float


@dataclass
class Code:
    email: str
    client_id: str
    redirect_uri: str
    scopes: frozenset[str]
    challenge: str | None
    challenge_method: str | None
    offline: bool
    force_consent: bool
    expires_at: float
    used: bool = False


@dataclass
class Signing:
    key_id: str
    private_pem: bytes
    certificate_pem: str


@cache
def signing() -> Signing:
    """One RSA key per process (generating one is slow), with a self-signed certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-google.example")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    return Signing(
        key_id=hashlib.sha1(der).hexdigest(),  # noqa: S324 - an identifier, as Google's
        private_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
    )


def sign_jwt(payload: dict[str, object]) -> str:
    keys = signing()
    signer = crypt.RSASigner.from_string(keys.private_pem, key_id=keys.key_id)
    return jwt.encode(signer, payload).decode()


def normalize_scopes(text: str) -> list[str]:
    return [SCOPE_ALIASES.get(s, s) for s in text.split()]


def _oauth_error(status: int, error: str, description: str) -> Reply:
    return Reply.json({"error": error, "error_description": description}, status)


def _error_page(status: int, error: str, detail: str) -> Reply:
    page = (f"<!doctype html><title>Error {status}: {error}</title><h1>Access blocked</h1>"
            f"<p>Error {status}: {html.escape(error)}</p><p>{html.escape(detail)}</p>")
    return Reply(status, page.encode(), "text/html; charset=utf-8")


@dataclass
class OAuthServer:
    client_id: str
    client_secret: str
    ids: Ids
    consent_email: str = "alice@example.com"
    granted_scopes: set[str] | None = None
    consent_denied: bool = False
    redirect_uris: set[str] | None = None  # None: any http loopback URI
    access_token_seconds: int = 3600
    grants: list[Grant] = field(default_factory=list)
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: dict[str, AccessToken] = field(default_factory=dict)

    # --- the Python handle --------------------------------------------------------------

    def _grant(self, email: str, scopes: set[str]) -> tuple[Grant, bool]:
        """The live grant of `email` to our client, widened to `scopes`; True when new."""
        for grant in self.grants:
            if grant.email == email and grant.client_id == self.client_id and not grant.revoked:
                grant.scopes |= scopes
                return grant, False
        grant = Grant(email, self.client_id, set(scopes), self.ids.token(100, "1//0fake"))
        self.grants.append(grant)
        return grant, True

    def issue_refresh_token(self, email: str, scopes: list[str] | set[str]) -> str:
        return self._grant(email, set(normalize_scopes(" ".join(scopes))))[0].refresh_token

    def issue_code(
        self, email: str, scopes: list[str] | set[str], redirect_uri: str,
        *, challenge: str | None = None, offline: bool = True,
    ) -> str:
        code = self.ids.token(70, "4/0fake")
        self.codes[code] = Code(
            email, self.client_id, redirect_uri, frozenset(normalize_scopes(" ".join(scopes))),
            challenge, "S256" if challenge else None, offline, True,
            time.time() + CODE_SECONDS,
        )
        return code

    def revoke(self, email: str) -> None:
        for grant in self.grants:
            if grant.email == email:
                grant.revoked = True

    def expire_access_tokens(self) -> None:
        for token in self.tokens.values():
            token.expires_at = 0.0

    def access(self, token: str) -> AccessToken | None:
        found = self.tokens.get(token)
        if found is None or found.grant.revoked or found.expires_at <= time.time():
            return None
        return found

    def _access_token(self, grant: Grant, scopes: frozenset[str]) -> tuple[str, int]:
        token = self.ids.token(150, "ya29.fake")
        self.tokens[token] = AccessToken(grant, scopes, time.time() + self.access_token_seconds)
        return token, self.access_token_seconds

    # --- HTTP ---------------------------------------------------------------------------

    def consent(self, query: list[tuple[str, str]]) -> Reply:
        """GET /o/oauth2/auth: the user signs in as `consent_email` and agrees."""
        params = dict(query)
        client_id = params.get("client_id")
        if client_id != self.client_id:
            return _error_page(401, "invalid_client", "The OAuth client was not found.")
        redirect_uri = params.get("redirect_uri", "")
        if not self._redirect_ok(redirect_uri):
            return _error_page(400, "redirect_uri_mismatch",
                               f"The redirect URI {redirect_uri!r} is not registered.")
        if params.get("response_type") != "code":
            return _error_page(400, "invalid_request",
                               "Invalid response_type: this fake serves the code flow only.")
        requested = normalize_scopes(params.get("scope", ""))
        if not requested:
            return _error_page(400, "invalid_request", "Missing required parameter: scope")
        unknown = [s for s in requested if s not in KNOWN_SCOPES]
        if unknown:
            return _error_page(400, "invalid_scope",
                               f"Some requested scopes were invalid: {unknown}")
        if params.get("access_type", "online") not in ("online", "offline"):
            return _error_page(400, "invalid_request", "Invalid access_type.")
        if params.get("include_granted_scopes", "false") not in ("true", "false"):
            return _error_page(400, "invalid_request", "Invalid include_granted_scopes.")
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method", "plain" if challenge else None)
        if challenge and method not in ("S256", "plain"):
            return _error_page(400, "invalid_request", "Invalid code_challenge_method.")
        if challenge and not 43 <= len(challenge) <= 128:
            return _error_page(400, "invalid_request", "Invalid code_challenge.")
        answer: list[tuple[str, str]] = []
        if self.consent_denied:
            answer.append(("error", "access_denied"))
        else:
            granted = set(requested) if self.granted_scopes is None else (
                set(requested) & set(normalize_scopes(" ".join(self.granted_scopes)))
            )
            if params.get("include_granted_scopes") == "true":
                for grant in self.grants:
                    if grant.email == self.consent_email and not grant.revoked:
                        granted |= grant.scopes
            offline = params.get("access_type") == "offline"
            code = self.issue_code(self.consent_email, granted, redirect_uri,
                                   challenge=challenge, offline=offline)
            self.codes[code].challenge_method = method
            self.codes[code].force_consent = "consent" in params.get("prompt", "").split()
            answer += [("code", code), ("scope", " ".join(sorted(granted)))]
        if "state" in params:
            answer.insert(0, ("state", params["state"]))
        separator = "&" if "?" in redirect_uri else "?"
        location = redirect_uri + separator + urlencode(answer + [("authuser", "0")])
        return Reply(302, b"", "text/html; charset=utf-8", {"Location": location})

    def _redirect_ok(self, uri: str) -> bool:
        if self.redirect_uris is not None:
            return uri in self.redirect_uris
        parts = urlsplit(uri)
        return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost") \
            and not parts.fragment

    def token(self, body: bytes, authorization: str | None) -> Reply:
        """POST /token: authorization_code and refresh_token grants."""
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            decoded = base64.b64decode(authorization[6:]).decode()
            client_id, _, client_secret = decoded.partition(":")
        if client_id != self.client_id:
            return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if client_secret != self.client_secret:
            return _oauth_error(401, "invalid_client", "Unauthorized")
        grant_type = params.get("grant_type")
        if grant_type == "authorization_code":
            return self._exchange(params)
        if grant_type == "refresh_token":
            return self._refresh(params)
        if not grant_type:
            return _oauth_error(400, "invalid_request", "Missing required parameter: grant_type")
        return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _exchange(self, params: dict[str, str]) -> Reply:
        if "code" not in params:
            return _oauth_error(400, "invalid_request", "Missing required parameter: code")
        code = self.codes.get(params["code"])
        if code is None or code.used or code.expires_at < time.time():
            return _oauth_error(400, "invalid_grant", "Malformed auth code." if code is None
                                else "Bad Request")
        if params.get("redirect_uri") != code.redirect_uri:
            return _oauth_error(400, "redirect_uri_mismatch", "Bad Request")
        if code.challenge is not None:
            verifier = params.get("code_verifier")
            if not verifier:
                return _oauth_error(400, "invalid_grant", "Missing code verifier.")
            if code.challenge_method == "S256":
                digest = hashlib.sha256(verifier.encode()).digest()
                computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
            else:
                computed = verifier
            if computed != code.challenge:
                return _oauth_error(400, "invalid_grant", "Invalid code verifier.")
        code.used = True
        grant, new = self._grant(code.email, set(code.scopes))
        token, seconds = self._access_token(grant, code.scopes)
        answer: dict[str, object] = {
            "access_token": token, "expires_in": seconds, "token_type": "Bearer",
            "scope": " ".join(sorted(code.scopes)),
        }
        # Google hands out a refresh token for offline access on first consent only
        # (or when the user was made to consent again with prompt=consent).
        if code.offline and (new or code.force_consent):
            answer["refresh_token"] = grant.refresh_token
        if "openid" in code.scopes:
            answer["id_token"] = self.id_token(code.email)
        return Reply.json(answer)

    def _refresh(self, params: dict[str, str]) -> Reply:
        refresh = params.get("refresh_token")
        if not refresh:
            return _oauth_error(400, "invalid_request", "Missing required parameter: refresh_token")
        grant = next((g for g in self.grants if g.refresh_token == refresh), None)
        if grant is None or grant.revoked:
            return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        scopes = frozenset(grant.scopes)
        if params.get("scope"):
            asked = frozenset(normalize_scopes(params["scope"]))
            if not asked <= grant.scopes:
                return _oauth_error(400, "invalid_scope",
                                    "The requested scope is not covered by the grant.")
            scopes = asked
        token, seconds = self._access_token(grant, scopes)
        answer: dict[str, object] = {
            "access_token": token, "expires_in": seconds, "token_type": "Bearer",
            "scope": " ".join(sorted(scopes)),
        }
        if "openid" in scopes:
            answer["id_token"] = self.id_token(grant.email)
        return Reply.json(answer)

    def revoke_http(self, query: list[tuple[str, str]], body: bytes) -> Reply:
        params = dict(query) | dict(parse_qsl(body.decode("utf-8", "replace")))
        token = params.get("token", "")
        access = self.tokens.get(token)
        grant = access.grant if access else next(
            (g for g in self.grants if g.refresh_token == token), None
        )
        if grant is None or grant.revoked or (access and access.expires_at <= time.time()):
            return _oauth_error(400, "invalid_token", "Token expired or revoked")
        grant.revoked = True
        return Reply.json({})

    def certs(self) -> Reply:
        keys = signing()
        return Reply.json({keys.key_id: keys.certificate_pem},
                          headers={"Cache-Control": "public, max-age=3600"})

    def id_token(self, email: str, audience: str | None = None) -> str:
        now = int(time.time())
        return sign_jwt({
            "iss": "https://accounts.google.com", "azp": self.client_id,
            "aud": audience or self.client_id, "sub": str(int(hashlib.sha256(email.encode())
                                                              .hexdigest()[:15], 16)),
            "email": email, "email_verified": True, "iat": now, "exp": now + 3600,
        })
