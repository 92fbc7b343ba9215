"""SigV4 verification: AWS's published test vectors, requests signed by botocore's own signer,
and every way a request can fail, each with AWS's error code."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from faceledger.errors import (
    ExpiredTokenException,
    FaceledgerError,
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)
from faceledger.server import sigv4
from faceledger.server.sigv4 import HttpRequest, signing_key, verify

# AWS's documentation example credentials (not a real key).
AWS_KEY_ID = "AKIDEXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

KEY_ID = "FLKTESTKEYAAAAAAAAAA"
SECRET = "test-secret-0123456789abcdefghijklmnopqr"
NOW = datetime(2024, 5, 17, 10, 30, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)
BODY = b'{"Image": {"Bytes": "aGVsbG8="}}'


def keys_for(secrets: dict[str, str]) -> sigv4.SigningKeyFor:
    def lookup(key_id: str, date: str, region: str, service: str) -> bytes | None:
        secret = secrets.get(key_id)
        return None if secret is None else signing_key(secret, date, region, service)

    return lookup


KNOWN = keys_for({KEY_ID: SECRET})


def sign(
    body: bytes = BODY,
    *,
    key_id: str = KEY_ID,
    secret: str = SECRET,
    region: str = "us-east-1",
    service: str = "rekognition",
    when: datetime = NOW,
    url: str = "http://127.0.0.1:8080/",
    headers: dict[str, str] | None = None,
) -> HttpRequest:
    """A request signed by botocore's SigV4Auth (the signer boto3 uses), as the server sees it."""
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={
            "X-Amz-Target": "RekognitionService.DetectFaces",
            "Content-Type": "application/x-amz-json-1.1",
            **(headers or {}),
        },
    )
    naive_utc = when.astimezone(UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=naive_utc):
        SigV4Auth(Credentials(key_id, secret), service, region).add_auth(request)
    parts = urlsplit(url)
    sent = [("host", parts.netloc)] + [(k.lower(), v) for k, v in request.headers.items()]
    return HttpRequest("POST", parts.path or "/", parts.query, sent, body)


def check(request: HttpRequest, *, lookup: sigv4.SigningKeyFor = KNOWN,
          now: datetime = NOW, **kw: object) -> sigv4.Authorization:
    return verify(request, signing_key_for=lookup, region="us-east-1", service="rekognition",
                  now=now, max_skew=SKEW, must_sign=("x-amz-target", "x-faceledger-purpose"),
                  **kw)  # type: ignore[arg-type]


def replace_header(request: HttpRequest, name: str, value: str) -> HttpRequest:
    headers = [(k, value if k == name else v) for k, v in request.headers]
    return HttpRequest(request.method, request.raw_path, request.query, headers, request.body)


def add_header(request: HttpRequest, name: str, value: str) -> HttpRequest:
    return HttpRequest(request.method, request.raw_path, request.query,
                       [*request.headers, (name, value)], request.body)


def raises(exc_type: type[FaceledgerError], request: HttpRequest, **kw: object) -> FaceledgerError:
    with pytest.raises(exc_type) as info:
        check(request, **kw)  # type: ignore[arg-type]
    return info.value


# --- AWS's published examples -------------------------------------------------------------

def test_signing_key_matches_aws_documentation() -> None:
    # "Examples of how to derive a signing key for Signature Version 4" (IAM, 2015-08-30).
    key = signing_key(AWS_SECRET, "20150830", "us-east-1", "iam")
    assert key.hex() == "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"


@pytest.mark.parametrize(
    ("method", "signature"),
    [
        ("GET", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        ("POST", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    ],
)
def test_aws_test_suite_vanilla_requests_verify(method: str, signature: str) -> None:
    # aws-sig-v4-test-suite: get-vanilla and post-vanilla.
    request = HttpRequest(method, "/", "", [
        ("host", "example.amazonaws.com"),
        ("x-amz-date", "20150830T123600Z"),
        ("authorization", (f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/20150830/us-east-1/"
                           f"service/aws4_request, SignedHeaders=host;x-amz-date, "
                           f"Signature={signature}")),
    ], b"")
    auth = verify(request, signing_key_for=keys_for({AWS_KEY_ID: AWS_SECRET}),
                  region="us-east-1", service="service",
                  now=datetime(2015, 8, 30, 12, 36, tzinfo=UTC), max_skew=SKEW)
    assert auth.access_key_id == AWS_KEY_ID
    assert auth.signed_headers == ("host", "x-amz-date")


def test_one_changed_hex_digit_fails_the_aws_vector() -> None:
    request = HttpRequest("GET", "/", "", [
        ("host", "example.amazonaws.com"),
        ("x-amz-date", "20150830T123600Z"),
        ("authorization", (f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/20150830/us-east-1/"
                           "service/aws4_request, SignedHeaders=host;x-amz-date, Signature="
                           "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf30")),
    ], b"")
    with pytest.raises(InvalidSignatureException, match="does not match"):
        verify(request, signing_key_for=keys_for({AWS_KEY_ID: AWS_SECRET}),
               region="us-east-1", service="service",
               now=datetime(2015, 8, 30, 12, 36, tzinfo=UTC), max_skew=SKEW)


# --- requests signed by botocore ------------------------------------------------------------

def test_botocore_signed_request_verifies() -> None:
    auth = check(sign())
    assert auth.access_key_id == KEY_ID
    assert auth.region == "us-east-1" and auth.service == "rekognition"
    assert {"host", "x-amz-date", "x-amz-target", "content-type"} <= set(auth.signed_headers)


def test_path_and_query_canonicalisation_agree_with_botocore() -> None:
    url = "http://127.0.0.1:8080/a/./b/../c%20d//e?b=2&a=1&a=0&empty="
    assert check(sign(url=url)).access_key_id == KEY_ID


def test_purpose_and_case_headers_signed_by_the_client_verify() -> None:
    request = sign(headers={"X-Faceledger-Purpose": "door access", "X-Faceledger-Case": "c-1"})
    assert "x-faceledger-purpose" in check(request).signed_headers


def test_clock_skew_within_the_limit_is_accepted() -> None:
    assert check(sign(when=NOW - timedelta(minutes=4, seconds=59))).access_key_id == KEY_ID
    assert check(sign(when=NOW + timedelta(minutes=4))).access_key_id == KEY_ID


# --- failures, each with AWS's code -------------------------------------------------------

def test_missing_authorization() -> None:
    request = HttpRequest("POST", "/", "", [("host", "h"), ("x-amz-date", "20240517T103000Z")],
                          BODY)
    err = raises(MissingAuthenticationTokenException, request)
    assert err.code == "MissingAuthenticationTokenException"
    assert err.status == 403


def test_presigned_query_authentication_is_refused_clearly() -> None:
    request = HttpRequest("POST", "/", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab",
                          [("host", "h")], BODY)
    assert "not supported" in raises(IncompleteSignatureException, request).message


def test_tampered_body_fails() -> None:
    request = sign()
    tampered = HttpRequest(request.method, request.raw_path, request.query, request.headers,
                           BODY.replace(b"aGVsbG8=", b"aGVsbG9="))
    err = raises(InvalidSignatureException, tampered)
    assert err.message == sigv4.BAD_SIGNATURE and err.code == "InvalidSignatureException"


def test_tampered_operation_header_fails() -> None:
    request = replace_header(sign(), "x-amz-target", "RekognitionService.DeleteCollection")
    assert raises(InvalidSignatureException, request).message == sigv4.BAD_SIGNATURE


def test_wrong_secret_fails() -> None:
    request = sign(secret="not-the-secret-0123456789abcdefghijklmno")
    assert raises(InvalidSignatureException, request).message == sigv4.BAD_SIGNATURE


def test_unknown_key() -> None:
    err = raises(UnrecognizedClientException, sign(key_id="FLKUNKNOWNKEYAAAAAAA"))
    assert err.code == "UnrecognizedClientException"
    assert err.message == "The security token included in the request is invalid."


def test_session_token_is_unrecognised() -> None:
    request = sign(headers={"X-Amz-Security-Token": "session"})
    raises(UnrecognizedClientException, request)


def test_expired_request() -> None:
    err = raises(ExpiredTokenException, sign(when=NOW - timedelta(minutes=6)))
    assert err.code == "InvalidSignatureException"  # AWS's wire code for an expired signature
    assert err.message.startswith("Signature expired: 20240517T102400Z is now earlier than "
                                  "20240517T102500Z (20240517T103000Z - 5 min.)")


def test_request_from_the_future() -> None:
    err = raises(ExpiredTokenException, sign(when=NOW + timedelta(minutes=6)))
    assert err.message.startswith("Signature not yet current: 20240517T103600Z")


def test_wrong_region_and_service_scope() -> None:
    err = raises(InvalidSignatureException, sign(region="eu-west-1"))
    assert "scoped to a valid region" in err.message and "eu-west-1" in err.message
    err = raises(InvalidSignatureException, sign(service="s3"))
    assert err.message == "Credential should be scoped to correct service: 'rekognition'."


def test_credential_date_must_match_request_date() -> None:
    request = sign()
    auth = request.header("authorization") or ""
    moved = replace_header(request, "authorization", auth.replace("/20240517/", "/20240516/"))
    assert "Date in Credential scope does not match" in raises(
        InvalidSignatureException, moved).message


def test_operation_header_added_after_signing_is_refused() -> None:
    request = sign()
    headers = [(k, v) for k, v in request.headers if k != "x-amz-target"]
    auth = request.header("authorization") or ""
    headers = [(k, v if k != "authorization" else auth.replace("x-amz-date;x-amz-target",
                                                              "x-amz-date"))
               for k, v in headers] + [("x-amz-target", "RekognitionService.DetectFaces")]
    unsigned = HttpRequest("POST", "/", "", headers, request.body)
    assert "x-amz-target" in raises(IncompleteSignatureException, unsigned).message


def test_purpose_header_added_after_signing_is_refused() -> None:
    request = add_header(sign(), "x-faceledger-purpose", "anything")
    assert "x-faceledger-purpose" in raises(IncompleteSignatureException, request).message


def test_malformed_authorization_headers() -> None:
    base = sign()
    err = raises(IncompleteSignatureException,
                 replace_header(base, "authorization", "AWS4-HMAC-SHA256 Credential=x/y"))
    assert "requires 'SignedHeaders' parameter" in err.message
    assert "requires 'Signature' parameter" in err.message
    err = raises(IncompleteSignatureException,
                 replace_header(base, "authorization", "AWS3 Credential=a"))
    assert "Unsupported AWS 'algorithm'" in err.message
    auth = base.header("authorization") or ""
    err = raises(IncompleteSignatureException, replace_header(
        base, "authorization", auth.replace("/aws4_request", "")))
    assert "5 slash-delimited elements" in err.message


def test_missing_date() -> None:
    request = sign()
    no_date = HttpRequest("POST", "/", "", [(k, v) for k, v in request.headers
                                            if k != "x-amz-date"], request.body)
    assert "X-Amz-Date" in raises(IncompleteSignatureException, no_date).message


def test_payload_hash_header_must_match_the_body() -> None:
    request = sign(headers={"X-Amz-Content-SHA256": hashlib.sha256(b"other").hexdigest()})
    assert "x-amz-content-sha256" in raises(InvalidSignatureException, request).message
    unsigned = sign(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    assert "unsigned payloads" in raises(InvalidSignatureException, unsigned).message


def test_http_date_header_instead_of_x_amz_date() -> None:
    when = "Fri, 17 May 2024 10:30:00 GMT"
    canonical_headers = [("date", when), ("host", "h"),
                         ("x-amz-target", "RekognitionService.DetectFaces")]
    names = [k for k, _ in canonical_headers]
    probe = HttpRequest("POST", "/", "", canonical_headers, BODY)
    canonical = sigv4.canonical_request(probe, names, hashlib.sha256(BODY).hexdigest())
    key = signing_key(SECRET, "20240517", "us-east-1", "rekognition")
    import hmac

    sig = hmac.new(key, sigv4.string_to_sign(
        "20240517T103000Z", "20240517/us-east-1/rekognition/aws4_request", canonical).encode(),
        hashlib.sha256).hexdigest()
    auth = (f"AWS4-HMAC-SHA256 Credential={KEY_ID}/20240517/us-east-1/rekognition/aws4_request, "
            f"SignedHeaders={';'.join(names)}, Signature={sig}")
    request = add_header(probe, "authorization", auth)
    assert check(request).access_key_id == KEY_ID
