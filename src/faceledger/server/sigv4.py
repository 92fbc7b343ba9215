"""AWS Signature Version 4 verification for signed HTTP requests (header authentication).

The server recomputes the signature the client made: canonical request (method, URI, query,
signed headers, SHA-256 of the body), string to sign with the credential scope, HMAC chain from
the key's secret. Failures raise AWS's own error codes:

    no Authorization header                      MissingAuthenticationTokenException
    malformed header, required header unsigned   IncompleteSignatureException
    unknown (or revoked) access key id           UnrecognizedClientException
    wrong region/service/date scope, tampering   InvalidSignatureException
                                                 (a region outside the accepted ones: the
                                                 default accepts any, SECURITY.md says why)
    signing time beyond the allowed clock skew   InvalidSignatureException ("Signature expired")

Pure: no I/O. The caller passes a function giving the signing key for (key id, date, region,
service), so a key's secret never has to leave the key store.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

from ..text import shown
from ..errors import (
    ExpiredTokenException,
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)
UNKNOWN_KEY = "The security token included in the request is invalid."

SigningKeyFor = Callable[[str, str, str, str], bytes | None]
"""(access key id, yyyymmdd, region, service) -> SigV4 signing key, or None if unknown/revoked."""

# Caller-supplied header fields are matched by these (one character class each: linear time,
# whatever the header; tests/test_probe_three_input.py runs every pattern of the package on
# long adversarial input).
_KEY_ID = re.compile(r"[A-Za-z0-9]{1,128}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HttpRequest:
    """What verification needs of one request; header names lower-case, repeats kept."""

    method: str
    raw_path: str
    query: str
    headers: Sequence[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return ",".join(values) if values else None


@dataclass(frozen=True)
class Authorization:
    """The parsed `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., ...`."""

    access_key_id: str
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{self.terminator}"


def parse_authorization(value: str) -> Authorization:
    """Parse a SigV4 Authorization header, or IncompleteSignatureException."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignatureException(
            f"Unsupported AWS 'algorithm': '{_clip(algorithm)}'; faceledger accepts {ALGORITHM}."
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, val = part.strip().partition("=")
        if eq:
            fields[name.strip()] = val.strip()
    missing = [f for f in ("Credential", "SignedHeaders", "Signature") if not fields.get(f)]
    if missing:
        raise IncompleteSignatureException(
            " ".join(f"Authorization header requires '{m}' parameter." for m in missing)
            + f" Authorization={_clip(value)}"
        )
    cred = fields["Credential"].split("/")
    if len(cred) != 5 or not all(cred):
        raise IncompleteSignatureException(
            "Credential must have exactly 5 slash-delimited elements, "
            f"e.g. keyid/date/region/service/term, got '{_clip(fields['Credential'])}'"
        )
    signed = tuple(fields["SignedHeaders"].split(";"))
    if any(not h or h != h.lower().strip() for h in signed):
        raise IncompleteSignatureException(
            f"SignedHeaders must be lower-case header names separated by ';', "
            f"got '{_clip(fields['SignedHeaders'])}'"
        )
    signature = fields["Signature"]
    if not _SIGNATURE.fullmatch(signature):
        raise IncompleteSignatureException("Signature must be 64 lower-case hex characters.")
    return Authorization(cred[0], cred[1], cred[2], cred[3], cred[4], signed, signature)


def region_allowed(claimed: str, allowed: str) -> bool:
    """Whether a credential scope's region is one the server accepts: `allowed` is "*" (any)
    or a comma-separated list of region names."""
    names = {r.strip() for r in allowed.split(",")}
    return "*" in names or claimed in names


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 signing key: HMAC chain "AWS4"+secret -> date -> region -> service -> term."""
    k = _hmac(f"AWS4{secret}".encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, TERMINATOR)


def canonical_uri(raw_path: str) -> str:
    """The path with dot segments and repeated slashes removed, URI-encoded once more
    (every AWS service but S3 signs the doubly-encoded path)."""
    return quote(_remove_dot_segments(raw_path or "/") or "/", safe="/~")


def canonical_query(query: str) -> str:
    """Query parameters URI-encoded (RFC 3986 unreserved kept) and sorted by name, then value."""
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def canonical_request(request: HttpRequest, signed_headers: Iterable[str],
                      payload_hash: str) -> str:
    """SigV4's canonical request."""
    names = list(signed_headers)
    lines = []
    for name in names:
        values = request.header_values(name)
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}")
    return "\n".join(
        [
            request.method.upper(),
            canonical_uri(request.raw_path),
            canonical_query(request.query),
            "\n".join(lines) + "\n",
            ";".join(names),
            payload_hash,
        ]
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """SigV4's string to sign."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def request_time(request: HttpRequest) -> tuple[str, datetime, str]:
    """(ISO-8601 basic time used in the string to sign, that time, the header it came from)."""
    amz = request.header("x-amz-date")
    if amz is not None:
        try:
            when = datetime.strptime(amz.strip(), AMZ_DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise IncompleteSignatureException(
                f"X-Amz-Date must be in the ISO8601 basic format yyyyMMdd'T'HHmmss'Z', "
                f"got '{_clip(amz)}'."
            ) from None
        return amz.strip(), when, "x-amz-date"
    date = request.header("date")
    if date is not None:
        try:
            parsed: datetime | None = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise IncompleteSignatureException(f"Date header is not an HTTP date: '{_clip(date)}'.")
        when = parsed.astimezone(UTC)
        return when.strftime(AMZ_DATE_FORMAT), when, "date"
    raise IncompleteSignatureException(
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
    )


def verify(
    request: HttpRequest,
    *,
    signing_key_for: SigningKeyFor,
    region: str,
    service: str,
    now: datetime,
    max_skew: timedelta,
    must_sign: Iterable[str] = (),
) -> Authorization:
    """Check the request's SigV4 signature; return its Authorization or raise AWS's error.

    `region`: the regions a credential may be scoped to ("*": any; see `region_allowed`).
    `must_sign`: header names that, when present, must be covered by the signature (so that,
    e.g., the operation or a stated purpose cannot be changed in transit).
    """
    header = request.header("authorization")
    if header is None:
        if "X-Amz-Signature=" in request.query or "x-amz-signature=" in request.query.lower():
            raise IncompleteSignatureException(
                "Query-string (presigned) authentication is not supported; "
                "sign the Authorization header."
            )
        raise MissingAuthenticationTokenException("Request is missing Authentication Token")
    auth = parse_authorization(header)
    amz_date, signed_at, date_header = request_time(request)

    required = {"host", date_header, *(h for h in must_sign if request.header(h) is not None)}
    if request.header("x-amz-content-sha256") is not None:
        required.add("x-amz-content-sha256")
    unsigned = sorted(required - set(auth.signed_headers))
    if unsigned:
        raise IncompleteSignatureException(
            "These headers must be signed (listed in SignedHeaders): " + ", ".join(unsigned) + "."
        )
    absent = [h for h in auth.signed_headers if request.header(h) is None]
    if absent:
        raise IncompleteSignatureException(
            "Signed headers are missing from the request: " + ", ".join(absent) + "."
        )

    if auth.terminator != TERMINATOR:
        raise InvalidSignatureException(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', "
            f"not '{_clip(auth.terminator)}'."
        )
    if auth.date != amz_date[:8]:
        raise InvalidSignatureException(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{_clip(auth.date)}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    if auth.service != service:
        raise InvalidSignatureException(
            f"Credential should be scoped to correct service: '{service}'."
        )
    if not region_allowed(auth.region, region):
        allowed = [r.strip() for r in region.split(",") if r.strip()]
        raise InvalidSignatureException(
            f"Credential should be scoped to a valid region: this server accepts "
            f"{', '.join(repr(r) for r in allowed)}, not '{_clip(auth.region)}'. Sign for "
            f"{'it' if len(allowed) == 1 else 'one of them'} (boto3: region_name=; AWS CLI: "
            "--region), or let the server accept any region (FACELEDGER_REGION=*)."
        )

    if signed_at < now - max_skew:
        raise ExpiredTokenException(
            f"Signature expired: {amz_date} is now earlier than "
            f"{(now - max_skew).strftime(AMZ_DATE_FORMAT)} "
            f"({now.strftime(AMZ_DATE_FORMAT)} - {_minutes(max_skew)})"
        )
    if signed_at > now + max_skew:
        raise ExpiredTokenException(
            f"Signature not yet current: {amz_date} is still later than "
            f"{(now + max_skew).strftime(AMZ_DATE_FORMAT)} "
            f"({now.strftime(AMZ_DATE_FORMAT)} + {_minutes(max_skew)})"
        )

    # faceledger issues no temporary credentials, so a session token can match nothing.
    if request.header("x-amz-security-token") is not None or not _KEY_ID.fullmatch(
        auth.access_key_id
    ):
        raise UnrecognizedClientException(UNKNOWN_KEY)
    key = signing_key_for(auth.access_key_id, auth.date, auth.region, auth.service)
    if key is None:
        raise UnrecognizedClientException(UNKNOWN_KEY)

    body_hash = hashlib.sha256(request.body).hexdigest()
    claimed = request.header("x-amz-content-sha256")
    if claimed is not None and claimed.strip() != body_hash:
        why = ("unsigned payloads are not accepted" if claimed.strip() == UNSIGNED_PAYLOAD
               else "it does not match the SHA-256 of the body received")
        raise InvalidSignatureException(f"The x-amz-content-sha256 header is refused: {why}.")

    canonical = canonical_request(request, auth.signed_headers, body_hash)
    expected = hmac.new(key, string_to_sign(amz_date, auth.scope, canonical).encode("utf-8"),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, auth.signature):
        raise InvalidSignatureException(BAD_SIGNATURE)
    return auth


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 5.2.4, plus AWS's rule that empty segments (repeated slashes) collapse.
    out: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
        else:
            out.append(seg)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and out else ""
    return first + "/".join(out) + last


def _minutes(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 60} min." if seconds % 60 == 0 else f"{seconds} s"


def _clip(text: str, limit: int = 120) -> str:
    return shown(text, limit)
