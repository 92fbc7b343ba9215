"""What SDK users see (issue 26): the unmodified boto3 Rekognition client against a real server on
127.0.0.1. faceledger's own answers (a search's false-match rate and size, matches held for
review) as X-Faceledger-* headers and through `faceledger.sdk`; regions; tags; attributes that
are refused on purpose."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from faceledger.sdk import show_extensions, sign_each_call, state_context
from faceledger.server import RekognitionApp, running
from faceledger.server.keys import IssuedKey, KeyStore
from faceledger.service import FaceService
from faceledger.settings import Settings

NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})
SEARCH_FIGURES = ("FalseMatchRate", "FacesSearched", "ExpectedFalseMatches",
                  "FalseNonMatchRate")


@dataclass
class Server:
    url: str
    service: FaceService
    keys: KeyStore
    admin: IssuedKey

    def client(self, region: str = "us-east-1", key: IssuedKey | None = None) -> Any:
        key = key or self.admin
        # these tests make the same call twice within a second (plain, then with the helper):
        # each is signed anew, as SECURITY.md's "Replayed requests" tells SDK users to
        return sign_each_call(boto3.session.Session().client(
            "rekognition", endpoint_url=self.url, region_name=region,
            aws_access_key_id=key.info.access_key_id,
            aws_secret_access_key=key.secret_access_key, config=NO_RETRIES))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, service: FaceService) -> Iterator[Server]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("sdk") / "data")
    svc = FaceService(settings, pipeline=service.pipeline)
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    app = RekognitionApp(svc, keys, settings)
    with running(app) as url:
        yield Server(url, svc, keys, keys.create("admin", ["*"], ["*"], admin=True))
    app.close()


@pytest.fixture(scope="module")
def lopez(faces_dir: Path) -> tuple[bytes, bytes]:
    """Two photos of one person (LFW): the second matches the first at Similarity 95."""
    folder = faces_dir / "lfw" / "Jennifer_Lopez"
    return ((folder / "Jennifer_Lopez_0003.jpg").read_bytes(),
            (folder / "Jennifer_Lopez_0004.jpg").read_bytes())


def headers(response: dict[str, Any]) -> dict[str, str]:
    return dict(response["ResponseMetadata"]["HTTPHeaders"])


def _collection(server: Server, name: str, photo: bytes) -> None:
    rek = server.client()
    rek.create_collection(CollectionId=name)
    rek.index_faces(CollectionId=name, Image={"Bytes": photo}, ExternalImageId="lopez")


# --- 2. the per-search figures -------------------------------------------------------------------

def test_search_figures_reach_boto3_users(server: Server, lopez: tuple[bytes, bytes]) -> None:
    _collection(server, "figures", lopez[0])
    plain = server.client().search_faces_by_image(
        CollectionId="figures", Image={"Bytes": lopez[1]}, FaceMatchThreshold=95)
    assert not any(k in plain for k in SEARCH_FIGURES)  # botocore drops them ...
    got = headers(plain)  # ... but not the headers
    assert float(got["x-faceledger-false-match-rate"]) == pytest.approx(0.05)
    assert int(got["x-faceledger-faces-searched"]) == 1
    assert float(got["x-faceledger-expected-false-matches"]) == pytest.approx(0.05)
    assert 0 <= float(got["x-faceledger-false-non-match-rate"]) < 1
    assert float(got["x-faceledger-face-match-threshold"]) == 95
    assert "x-faceledger-review-required" not in got

    helped = show_extensions(server.client()).search_faces_by_image(
        CollectionId="figures", Image={"Bytes": lopez[1]}, FaceMatchThreshold=95)
    for member in SEARCH_FIGURES:
        assert helped[member] == pytest.approx(float(got[_header(member)]))
    assert helped["FacesSearched"] == 1
    assert helped["FaceMatches"][0]["Face"]["ExternalImageId"] == "lopez"
    # what botocore parsed is as it was: timestamps and model members untouched
    assert helped["FaceMatches"] == plain["FaceMatches"]
    # CompareFaces: the threshold and its rate; an unmatched face's Similarity
    compared = show_extensions(server.client()).compare_faces(
        SourceImage={"Bytes": lopez[0]}, TargetImage={"Bytes": lopez[1]},
        SimilarityThreshold=100)
    assert compared["SimilarityThreshold"] == 100 and compared["FalseMatchRate"] == 0
    assert compared["FaceMatches"] == [] and 0 < compared["UnmatchedFaces"][0]["Similarity"] < 100


def _header(member: str) -> str:
    from faceledger.server.extensions import header_name

    return header_name(member)


# --- 3. held for review is not "no match" ------------------------------------------------------

def test_held_for_review_is_visible_to_boto3(server: Server,
                                             lopez: tuple[bytes, bytes]) -> None:
    _collection(server, "held", lopez[0])
    server.service.put_collection_policy("held", {"IdentificationMode": True})
    rek = state_context(server.client(), purpose="door access", case="INC-26")
    plain = rek.search_faces_by_image(CollectionId="held", Image={"Bytes": lopez[1]},
                                      FaceMatchThreshold=95)
    assert plain["FaceMatches"] == []
    got = headers(plain)
    assert got["x-faceledger-review-required"] == "true"
    assert got["x-faceledger-review-candidates-count"] == "1"
    held = server.service.list_review_candidates("held", "PENDING")
    ids = [c["CandidateId"] for c in held["Candidates"]]
    assert got["x-faceledger-review-candidates"].split(",") == ids
    assert held["Candidates"][0]["CaseReference"] == "INC-26"

    helped = show_extensions(rek).search_faces_by_image(
        CollectionId="held", Image={"Bytes": lopez[1]}, FaceMatchThreshold=95)
    assert helped["ReviewRequired"] is True and helped["FaceMatches"] == []
    assert len(helped["ReviewCandidates"]) == 1
    assert helped["ReviewCandidates"][0]["Status"] == "PENDING"


def test_extension_headers_are_safe_header_text() -> None:
    from faceledger.server.extensions import extension_headers

    out = dict(extension_headers("SearchFaces", {
        "FaceMatches": [], "FalseMatchRate": 1e-4, "ReviewRequired": True,
        "ReviewCandidates": [{"CandidateId": f"c{i}"} for i in range(150)],
        "Note": "line\r\nX-Evil: 1", "Big": float("inf")}))
    assert out[b"x-faceledger-false-match-rate"] == b"0.0001"
    assert out[b"x-faceledger-review-required"] == b"true"
    assert out[b"x-faceledger-review-candidates-count"] == b"150"
    assert len(out[b"x-faceledger-review-candidates"].split(b",")) == 100
    assert b"x-faceledger-note" not in out and b"x-faceledger-big" not in out
    assert b"x-faceledger-face-matches" not in out  # a model member: boto3 has it


def test_errors_are_unchanged_by_the_helper(server: Server) -> None:
    with pytest.raises(ClientError) as exc:
        show_extensions(server.client()).describe_collection(CollectionId="absent")
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"


# --- 6. regions ------------------------------------------------------------------------------

def test_any_region_is_accepted_by_default(server: Server) -> None:
    for region in ("us-east-1", "eu-west-1", "ap-southeast-2"):
        assert "CollectionIds" in server.client(region).list_collections()


def test_a_server_pinned_to_regions_says_which(server: Server, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", region="eu-west-1, eu-central-1")
    svc = FaceService(settings, pipeline=server.service.pipeline)
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    key = keys.create("pinned", ["*"], ["*"])
    app = RekognitionApp(svc, keys, settings, warm_up=False)
    with running(app) as url:
        pinned = Server(url, svc, keys, key)
        assert "CollectionIds" in pinned.client("eu-central-1").list_collections()
        with pytest.raises(ClientError) as exc:
            pinned.client("us-east-1").list_collections()
    app.close()
    error = exc.value.response["Error"]
    assert error["Code"] == "InvalidSignatureException"
    assert "'eu-west-1', 'eu-central-1', not 'us-east-1'" in error["Message"]
    assert "region_name=" in error["Message"] and "--region" in error["Message"]


def test_the_aws_cli_in_another_region_and_what_it_shows(server: Server, tmp_path: Path,
                                                         lopez: tuple[bytes, bytes]) -> None:
    """AWS CLI v1 (where installed): any region works; its output drops faceledger's members,
    its --debug log shows them as headers (what docs/sdk.md tells its users)."""
    import json
    import os
    import shutil
    import subprocess

    aws = shutil.which("aws")
    if aws is None:
        pytest.skip("the AWS CLI is not installed (pip install awscli)")
    _collection(server, "cli-figures", lopez[0])
    probe = tmp_path / "probe.jpg"
    probe.write_bytes(lopez[1])
    env = {**os.environ, "AWS_ACCESS_KEY_ID": server.admin.info.access_key_id,
           "AWS_SECRET_ACCESS_KEY": server.admin.secret_access_key,
           "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    done = subprocess.run(
        [aws, "rekognition", "search-faces-by-image", "--endpoint-url", server.url,
         "--region", "eu-west-1", "--collection-id", "cli-figures", "--image-bytes",
         f"fileb://{probe}", "--face-match-threshold", "95", "--output", "json", "--debug"],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["FaceMatches"] and "FalseMatchRate" not in answer
    assert "x-faceledger-false-match-rate" in done.stderr.lower()


# --- 7. a refusal names the HTTP way of giving a purpose ---------------------------------------

def test_purpose_refusal_names_the_header(server: Server) -> None:
    server.client().create_collection(CollectionId="purposeful")
    server.service.put_collection_policy("purposeful", {"RequirePurpose": True})
    with pytest.raises(ClientError) as exc:
        server.client().list_faces(CollectionId="purposeful")
    assert "X-Faceledger-Purpose header" in exc.value.response["Error"]["Message"]
    assert "--purpose" not in exc.value.response["Error"]["Message"]
    stated = state_context(server.client(), purpose="audit")
    assert stated.list_faces(CollectionId="purposeful")["Faces"] == []


# --- 8. tags: CreateCollection took them, now they can be read and changed --------------------

def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_tags_on_a_collection(server: Server) -> None:
    import json

    rek = server.client()
    arn = rek.create_collection(CollectionId="tagged",
                                Tags={"team": "door", "cost centre": "17"})["CollectionArn"]
    assert rek.describe_collection(CollectionId="tagged")["CollectionARN"] == arn
    assert rek.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"team": "door",
                                                                   "cost centre": "17"}
    rek.tag_resource(ResourceArn=arn, Tags={"team": "lobby", "owner": "ops@example.org"})
    rek.untag_resource(ResourceArn=arn, TagKeys=["cost centre", "never-set"])
    assert rek.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"team": "lobby",
                                                                   "owner": "ops@example.org"}
    # each change is a ledger event naming the keys, never the values (free text)
    events = [json.loads(e.body) for e in server.service.ledger.scan(1)]
    tagged = [e for e in events if e["operation"] in ("TagResource", "UntagResource")]
    assert [e["collection"] for e in tagged] == ["tagged", "tagged"]
    assert tagged[0]["params"]["TagKeys"] == ["owner", "team"]
    assert "ops@example.org" not in json.dumps(tagged)

    # AWS's limits and errors
    with pytest.raises(ClientError) as exc:
        rek.tag_resource(ResourceArn=arn, Tags={f"k{i}": "v" for i in range(49)})
    assert _code(exc) == "ServiceQuotaExceededException"  # 2 + 49 > 50
    for bad in ({"aws:owner": "x"}, {"semi;colon": "x"}, {"k": "new\nline"}):
        with pytest.raises(ClientError) as exc:
            rek.tag_resource(ResourceArn=arn, Tags=bad)
        assert _code(exc) == "InvalidParameterException", bad
    with pytest.raises(ClientError) as exc:
        rek.list_tags_for_resource(ResourceArn=arn.replace("tagged", "absent"))
    assert _code(exc) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        rek.list_tags_for_resource(
            ResourceArn="arn:aws:rekognition:eu-west-1:123456789012:collection/tagged")
    assert _code(exc) == "ResourceNotFoundException"
    assert "DescribeCollection's CollectionARN" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        rek.list_tags_for_resource(
            ResourceArn="arn:aws:rekognition:eu-west-1:123456789012:project/p/1")
    assert _code(exc) == "InvalidParameterException"
    assert rek.list_tags_for_resource(ResourceArn=arn)["Tags"]["team"] == "lobby"  # unchanged

    # a key names only its collections, by ARN as by CollectionId
    other = server.keys.create("door-only", ["*"], ["door-*"])
    with pytest.raises(ClientError) as exc:
        server.client(key=other).tag_resource(ResourceArn=arn, Tags={"x": "y"})
    assert _code(exc) == "AccessDeniedException"


# --- 8. attributes refused on purpose say so --------------------------------------------------

def test_attributes_not_estimated_are_named(server: Server, lopez: tuple[bytes, bytes]) -> None:
    rek = server.client()
    plain = rek.detect_faces(Image={"Bytes": lopez[0]}, Attributes=["ALL"])
    assert "AgeRange" not in plain["FaceDetails"][0]  # nothing invented ...
    got = headers(plain)  # ... and the answer says what is missing, and why
    missing = got["x-faceledger-attributes-not-returned"].split(",")
    assert {"AGE_RANGE", "GENDER", "EMOTIONS", "SMILE"} <= set(missing)
    assert "docs/sdk.md" in got["x-faceledger-attributes-not-returned-reason"]
    asked = show_extensions(server.client()).detect_faces(Image={"Bytes": lopez[0]},
                                                          Attributes=["DEFAULT", "EMOTIONS"])
    assert asked["AttributesNotReturned"] == ["EMOTIONS"]
    assert "AttributesNotReturned" not in show_extensions(server.client()).detect_faces(
        Image={"Bytes": lopez[0]})
    assert "x-faceledger-attributes-not-returned" not in headers(
        rek.detect_faces(Image={"Bytes": lopez[0]}, Attributes=["DEFAULT"]))


# --- 5. the README's search key meets CreateCollection: the refusal says what to do ----------

def test_a_search_key_refused_enrolment_is_told_how(server: Server) -> None:
    search_only = server.keys.create("door-app", ["SearchFacesByImage", "CompareFaces"],
                                     ["staff"])
    with pytest.raises(ClientError) as exc:
        server.client(key=search_only).create_collection(CollectionId="staff")
    message = exc.value.response["Error"]["Message"]
    assert _code(exc) == "AccessDeniedException"
    assert "may call SearchFacesByImage, CompareFaces" in message
    assert "faceledger keys create NAME -o 'CreateCollection,...'" in message


def test_sign_each_call_serves_the_same_call_twice_within_a_second(server: Server) -> None:
    """Two byte-identical calls signed by one key within one second share a signature and the
    server serves a signature once; with sign_each_call both are served at once (no retry)."""
    key = server.admin
    plain = boto3.session.Session().client(
        "rekognition", endpoint_url=server.url, region_name="us-east-1",
        aws_access_key_id=key.info.access_key_id, aws_secret_access_key=key.secret_access_key,
        config=NO_RETRIES)
    refused = 0
    for _ in range(3):  # the second of a pair may fall into the next second: try a few pairs
        try:
            plain.list_collections()
            plain.list_collections()
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ThrottlingException"
            refused += 1
    assert refused >= 1  # the repeat within one second is refused ...
    signed = server.client()
    answers = [signed.list_collections() for _ in range(6)]  # ... each signed anew is served
    assert [a["ResponseMetadata"]["RetryAttempts"] for a in answers] == [0] * 6
