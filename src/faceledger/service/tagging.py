"""TagResource, UntagResource and ListTagsForResource on collections, by ARN.

A collection's ARN is the one CreateCollection and DescribeCollection answer
(`arn:faceledger:rekognition:local:000000000000:collection/<id>`). Rekognition also tags stream
processors and Custom Labels models, which faceledger does not have: their ARNs are refused as
invalid parameters. Tags follow AWS's rules (collection_members.tags; at most 50 on a
collection). The caller must be allowed to name the collection (the API key's collections),
as for any operation naming a CollectionId. Each change is a ledger event with the tag keys
(never the values, which are the caller's free text) in the transaction that writes them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..context import LOCAL, RequestContext
from ..errors import (
    AccessDeniedException,
    InvalidParameterException,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
)
from ..shapes import Shape
from ..text import shown
from . import collection_members as m
from .collections import ARN_PREFIX, CollectionOperations

# arn:PARTITION:rekognition:REGION:ACCOUNT:collection/ID
_COLLECTION_ARN = re.compile(r"arn:[a-z-]+:rekognition:[a-z0-9-]*:[0-9]*:collection/(?P<id>.+)")


class TaggingOperations(CollectionOperations):
    """Tags on collections (Rekognition request and response shapes)."""

    def tag_resource(self, resource_arn: str | None = None,
                     tags: dict[str, str] | None = None, *,
                     ctx: RequestContext = LOCAL) -> Shape:
        """TagResource: add or replace tags of a collection."""
        cid = self._tagged_collection(resource_arn, ctx)
        new = m.tags(tags if tags is not None else {}) or {}
        with self.audit("TagResource", ctx, collection=cid, uses_model=False) as op:
            op.note(TagKeys=sorted(new))
            current = self.catalog.collection_tags(op.conn, cid, for_update=True)
            merged = {**current, **new}
            if len(merged) > m.MAX_TAGS:
                raise ServiceQuotaExceededException(
                    f"Collection {cid} would have {len(merged)} tags; at most {m.MAX_TAGS}.")
            self.catalog.set_collection_tags(op.conn, cid, merged)
            op.record(tag_keys=sorted(merged))
        return {}

    def untag_resource(self, resource_arn: str | None = None,
                       tag_keys: Sequence[str] | None = None, *,
                       ctx: RequestContext = LOCAL) -> Shape:
        """UntagResource: remove tags of a collection (keys it does not have are ignored)."""
        cid = self._tagged_collection(resource_arn, ctx)
        if isinstance(tag_keys, (str, bytes)) or not isinstance(tag_keys, Sequence):
            raise InvalidParameterException("TagKeys must be a list of tag keys.")
        if len(tag_keys) > 200:
            raise InvalidParameterException("TagKeys names at most 200 keys.")
        keys = {m.tag_key(k, "TagKeys") for k in tag_keys}
        with self.audit("UntagResource", ctx, collection=cid, uses_model=False) as op:
            op.note(TagKeys=sorted(keys))
            current = self.catalog.collection_tags(op.conn, cid, for_update=True)
            kept = {k: v for k, v in current.items() if k not in keys}
            self.catalog.set_collection_tags(op.conn, cid, kept)
            op.record(removed=sorted(set(current) & keys), tag_keys=sorted(kept))
        return {}

    def list_tags_for_resource(self, resource_arn: str | None = None, *,
                               ctx: RequestContext = LOCAL) -> Shape:
        """ListTagsForResource: a collection's tags."""
        cid = self._tagged_collection(resource_arn, ctx)
        with self.audit("ListTagsForResource", ctx, collection=cid, uses_model=False) as op:
            with self.catalog.read() as conn:
                found = self.catalog.collection_tags(conn, cid)
            op.record(tag_keys=sorted(found))
        return {"Tags": found}

    def _tagged_collection(self, resource_arn: object, ctx: RequestContext) -> str:
        """The collection id in `resource_arn`, if this server's and the caller's to name."""
        if not isinstance(resource_arn, str):
            raise InvalidParameterException("ResourceArn is required.")
        found = _COLLECTION_ARN.fullmatch(resource_arn)
        if found is None:
            raise InvalidParameterException(
                f"ResourceArn '{shown(resource_arn)}' is not a collection's ARN: faceledger "
                f"tags collections only ({ARN_PREFIX}<CollectionId>).")
        cid = m.collection_id(found["id"])
        if not resource_arn.startswith(ARN_PREFIX):
            raise ResourceNotFoundException(
                f"ResourceArn '{shown(resource_arn)}' is not this server's: its collections "
                f"are {ARN_PREFIX}<CollectionId> (DescribeCollection's CollectionARN).")
        if not ctx.may_name(cid):
            raise AccessDeniedException(f"You are not allowed to use collection {cid}.")
        return cid
