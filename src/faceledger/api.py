"""The public Python API: `FaceLedger` runs the service in this process.

    from faceledger import FaceLedger
    fl = FaceLedger()
    fl.detect_faces("group.jpg")["FaceDetails"]
    fl.compare_faces("id-card.jpg", "selfie.jpg")["FaceMatches"]

Images are bytes, paths to the caller's own files (the HTTP server never accepts paths), or
pictures in memory as face_recognition users hold them: numpy arrays (uint8 RGB, H x W x 3, as
`face_recognition.load_image_file` returns) and PIL images. Responses are Rekognition's shapes,
as dicts.
"""

from __future__ import annotations

import dataclasses
import uuid
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL.Image import Image as PILImage

from .context import LOCAL, RequestContext, stated
from .imaging import from_picture
from .service import FaceService
from .settings import Settings
from .shapes import Shape
from .sources import ImageInput

ImageArg = ImageInput | str | PathLike[str] | NDArray[np.uint8] | PILImage


def _image(image: ImageArg, settings: Settings) -> ImageInput:
    if isinstance(image, (str, PathLike)):
        return Path(image).read_bytes()
    if isinstance(image, (np.ndarray, PILImage)):
        # pixels go to the pipeline as they are (no re-encoding; the ledger names them by
        # imaging.pixels_sha256), within the same pixel limits as decoded bytes
        return from_picture(image, max_pixels=settings.max_image_pixels,
                            min_side=settings.min_image_side)
    return image


class FaceLedger:
    """faceledger in-process: every operation of the service, with files accepted as paths."""

    def __init__(self, settings: Settings | None = None, *, service: FaceService | None = None,
                 context: RequestContext = LOCAL) -> None:
        self.service = service or FaceService(settings or Settings())
        self.context = context

    def _image(self, image: ImageArg) -> ImageInput:
        return _image(image, self.service.settings)

    def _ctx(self) -> RequestContext:
        """This client's context with a request id of its own: one ledger event, one id."""
        return dataclasses.replace(self.context, request_id=str(uuid.uuid4()))

    def detect_faces(self, image: ImageArg, attributes: list[str] | None = None) -> Shape:
        """DetectFaces."""
        return self.service.detect_faces(self._image(image), attributes, ctx=self._ctx())

    def compare_faces(self, source: ImageArg, target: ImageArg,
                      similarity_threshold: float | None = None,
                      quality_filter: str | None = None) -> Shape:
        """CompareFaces."""
        return self.service.compare_faces(self._image(source), self._image(target),
                                          similarity_threshold, quality_filter, ctx=self._ctx())

    # --- collections, faces, users and search (faceledger.service.collections) --------------

    def create_collection(self, collection_id: str, tags: dict[str, str] | None = None,
                          face_model_version: str | None = None) -> Shape:
        """CreateCollection (bound to the configured model, or to `face_model_version`)."""
        return self.service.create_collection(collection_id, tags,
                                              face_model_version=face_model_version,
                                              ctx=self._ctx())

    def reenrol_collection(self, source_collection_id: str, target_collection_id: str,
                           photos: list[str | PathLike[str]],
                           face_model_version: str | None = None, *,
                           include_unmatched: bool = False, quality_filter: str = "NONE",
                           threads: int = 1) -> dict[str, Any]:
        """Re-enrol a collection into a new one bound to `face_model_version` (default: the
        configured model) from its original photos (files or folders), matched to its faces
        by SHA-256; the summary as `faceledger collection reenrol --json` prints it."""
        from .bulk import find_images, reenrol_images

        result = reenrol_images(self.service, source_collection_id, target_collection_id,
                                find_images([Path(p) for p in photos]),
                                model_version=face_model_version,
                                include_unmatched=include_unmatched, threads=threads,
                                quality_filter=quality_filter, ctx=self._ctx())
        return result.to_dict()

    def tag_resource(self, resource_arn: str, tags: dict[str, str]) -> Shape:
        """TagResource on a collection's ARN (CreateCollection's CollectionArn)."""
        return self.service.tag_resource(resource_arn, tags, ctx=self._ctx())

    def untag_resource(self, resource_arn: str, tag_keys: list[str]) -> Shape:
        """UntagResource."""
        return self.service.untag_resource(resource_arn, tag_keys, ctx=self._ctx())

    def list_tags_for_resource(self, resource_arn: str) -> Shape:
        """ListTagsForResource."""
        return self.service.list_tags_for_resource(resource_arn, ctx=self._ctx())

    def delete_collection(self, collection_id: str) -> Shape:
        """DeleteCollection: the collection and everything it holds."""
        return self.service.delete_collection(collection_id, ctx=self._ctx())

    def list_collections(self, next_token: str | None = None,
                         max_results: int | None = None) -> Shape:
        """ListCollections."""
        return self.service.list_collections(next_token, max_results, ctx=self._ctx())

    def describe_collection(self, collection_id: str) -> Shape:
        """DescribeCollection."""
        return self.service.describe_collection(collection_id, ctx=self._ctx())

    def index_faces(self, collection_id: str, image: ImageArg,
                    external_image_id: str | None = None, max_faces: int | None = None,
                    quality_filter: str | None = None,
                    detection_attributes: list[str] | None = None) -> Shape:
        """IndexFaces (QualityFilter AUTO unless given)."""
        return self.service.index_faces(
            collection_id=collection_id, image=self._image(image),
            external_image_id=external_image_id,
            detection_attributes=detection_attributes, max_faces=max_faces,
            quality_filter=quality_filter, ctx=self._ctx())

    def list_faces(self, collection_id: str, next_token: str | None = None,
                   max_results: int | None = None, user_id: str | None = None,
                   face_ids: list[str] | None = None) -> Shape:
        """ListFaces."""
        return self.service.list_faces(collection_id, next_token, max_results, user_id, face_ids,
                                       ctx=self._ctx())

    def delete_faces(self, collection_id: str, face_ids: list[str]) -> Shape:
        """DeleteFaces."""
        return self.service.delete_faces(collection_id, face_ids, ctx=self._ctx())

    def search_faces(self, collection_id: str, face_id: str, max_faces: int | None = None,
                     face_match_threshold: float | None = None) -> Shape:
        """SearchFaces (by a stored FaceId)."""
        return self.service.search_faces(collection_id, face_id, max_faces, face_match_threshold,
                                         ctx=self._ctx())

    def search_faces_by_image(self, collection_id: str, image: ImageArg,
                              max_faces: int | None = None,
                              face_match_threshold: float | None = None,
                              quality_filter: str | None = None) -> Shape:
        """SearchFacesByImage (the largest face in the image)."""
        return self.service.search_faces_by_image(
            collection_id, self._image(image), max_faces, face_match_threshold, quality_filter,
            ctx=self._ctx())

    def create_user(self, collection_id: str, user_id: str,
                    client_request_token: str | None = None) -> Shape:
        """CreateUser."""
        return self.service.create_user(collection_id, user_id, client_request_token,
                                        ctx=self._ctx())

    def delete_user(self, collection_id: str, user_id: str,
                    client_request_token: str | None = None) -> Shape:
        """DeleteUser."""
        return self.service.delete_user(collection_id, user_id, client_request_token,
                                        ctx=self._ctx())

    def list_users(self, collection_id: str, max_results: int | None = None,
                   next_token: str | None = None) -> Shape:
        """ListUsers."""
        return self.service.list_users(collection_id, max_results, next_token, ctx=self._ctx())

    def associate_faces(self, collection_id: str, user_id: str, face_ids: list[str],
                        user_match_threshold: float | None = None,
                        client_request_token: str | None = None) -> Shape:
        """AssociateFaces."""
        return self.service.associate_faces(collection_id, user_id, face_ids,
                                            user_match_threshold, client_request_token,
                                            ctx=self._ctx())

    def disassociate_faces(self, collection_id: str, user_id: str, face_ids: list[str],
                           client_request_token: str | None = None) -> Shape:
        """DisassociateFaces."""
        return self.service.disassociate_faces(collection_id, user_id, client_request_token,
                                               face_ids, ctx=self._ctx())

    def search_users(self, collection_id: str, user_id: str | None = None,
                     face_id: str | None = None, user_match_threshold: float | None = None,
                     max_users: int | None = None) -> Shape:
        """SearchUsers (by UserId or FaceId)."""
        return self.service.search_users(collection_id, user_id, face_id, user_match_threshold,
                                         max_users, ctx=self._ctx())

    def search_users_by_image(self, collection_id: str, image: ImageArg,
                              user_match_threshold: float | None = None,
                              max_users: int | None = None,
                              quality_filter: str | None = None) -> Shape:
        """SearchUsersByImage."""
        return self.service.search_users_by_image(collection_id, self._image(image),
                                                  user_match_threshold, max_users,
                                                  quality_filter, ctx=self._ctx())

    # --- stored video and redaction (faceledger.service.video / .redaction) -----------------

    def start_face_detection(self, video: dict[str, Any], job_tag: str | None = None,
                             client_request_token: str | None = None,
                             face_attributes: str | None = None) -> Shape:
        """StartFaceDetection on {"S3Object": {...}} of a configured bucket."""
        return self.service.start_face_detection(video, client_request_token, None,
                                                 face_attributes, job_tag, ctx=self._ctx())

    def get_face_detection(self, job_id: str, max_results: int | None = None,
                           next_token: str | None = None) -> Shape:
        """GetFaceDetection."""
        return self.service.get_face_detection(job_id, max_results, next_token, ctx=self._ctx())

    def start_face_search(self, video: dict[str, Any], collection_id: str,
                          face_match_threshold: float | None = None, job_tag: str | None = None,
                          client_request_token: str | None = None) -> Shape:
        """StartFaceSearch on {"S3Object": {...}} of a configured bucket."""
        return self.service.start_face_search(video, collection_id, client_request_token,
                                              face_match_threshold, None, job_tag,
                                              ctx=self._ctx())

    def get_face_search(self, job_id: str, max_results: int | None = None,
                        next_token: str | None = None, sort_by: str | None = None) -> Shape:
        """GetFaceSearch."""
        return self.service.get_face_search(job_id, max_results, next_token, sort_by,
                                            ctx=self._ctx())

    def redact(self, source: str | PathLike[str], output: str | PathLike[str],
               keep: list[str] | None = None, collection_id: str | None = None) -> Shape:
        """A copy of a video or image with every face not kept blurred."""
        return self.service.redact(Path(source), Path(output), keep or [], collection_id,
                                   ctx=self._ctx())

    def close(self) -> None:
        """Persist the vector index's in-memory state (fast reopen)."""
        self.service.close()

    def with_context(self, **fields: Any) -> FaceLedger:
        """A client whose operations carry this purpose/case/principal (a purpose or reference
        with control or bidirectional characters: InvalidParameterException)."""
        for name, field in (("purpose", "Purpose"), ("case", "Case reference"),
                            ("consent", "Consent reference")):
            if name in fields:
                fields[name] = stated(fields[name], field)
        return FaceLedger(service=self.service,
                          context=dataclasses.replace(self.context, **fields))
