"""Every error a faceledger caller can see, each carrying its Rekognition wire code.

    FaceledgerError                       (base; never shown as a traceback)
    ├── ClientError                       (HTTP 400: the request was at fault)
    │   ├── InvalidParameterException
    │   ├── InvalidImageFormatException
    │   ├── ImageTooLargeException
    │   ├── InvalidS3ObjectException
    │   ├── ResourceNotFoundException
    │   ├── ResourceAlreadyExistsException
    │   ├── ResourceInUseException
    │   ├── IdempotentParameterMismatchException
    │   ├── ServiceQuotaExceededException
    │   ├── ResourceNotReadyException     (the face model has no calibration table yet)
    │   ├── ConflictException
    │   ├── InvalidPaginationTokenException
    │   ├── AccessDeniedException
    │   ├── ValidationException
    │   ├── PolicyRefusedException        (a collection policy refused the operation)
    │   ├── ThrottlingException
    │   │   └── ReplayedRequestException  (a signature already received; SDKs retry it signed anew)
    │   ├── ProvisionedThroughputExceededException
    │   ├── VideoTooLargeException        (stored video over the size or duration limit)
    │   ├── LimitExceededException        (too many video jobs in progress)
    │   ├── UnknownOperationException     (no such operation on this server: AWS's JSON code)
    │   ├── SerializationException        (body is not JSON, or a member has the wrong JSON type)
    │   └── RequestTimeoutException       (HTTP 408: the body arrived too slowly)
    ├── AuthError                         (HTTP 403: SigV4 failures, AWS's own codes)
    │   ├── UnrecognizedClientException
    │   ├── InvalidSignatureException
    │   ├── IncompleteSignatureException
    │   ├── MissingAuthenticationTokenException
    │   └── ExpiredTokenException (request expired, "InvalidSignatureException" on the wire)
    └── InternalServerError               (HTTP 500: a bug of ours; the log keeps the traceback)

Adapters turn these into responses in exactly one place each (HTTP: `server`, CLI: `cli`).
"""

from __future__ import annotations

from typing import ClassVar


class FaceledgerError(Exception):
    """Base of every faceledger error; `code` is the Rekognition `__type`."""

    code: ClassVar[str] = "InternalServerError"
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, str]:
        """The JSON body Rekognition sends for this error."""
        return {"__type": self.code, "message": self.message}


class ClientError(FaceledgerError):
    status = 400


class InvalidParameterException(ClientError):
    code = "InvalidParameterException"


class InvalidImageFormatException(ClientError):
    code = "InvalidImageFormatException"


class ImageTooLargeException(ClientError):
    code = "ImageTooLargeException"


class InvalidS3ObjectException(ClientError):
    code = "InvalidS3ObjectException"


class ResourceNotFoundException(ClientError):
    code = "ResourceNotFoundException"


class ResourceAlreadyExistsException(ClientError):
    code = "ResourceAlreadyExistsException"


class ResourceInUseException(ClientError):
    code = "ResourceInUseException"


class IdempotentParameterMismatchException(ClientError):
    code = "IdempotentParameterMismatchException"


class ServiceQuotaExceededException(ClientError):
    code = "ServiceQuotaExceededException"


class ResourceNotReadyException(ClientError):
    """Rekognition's code for a model version that is not ready to serve (e.g. not deployed):
    here, a configured face model without a calibration table, whose scores would mean nothing."""

    code = "ResourceNotReadyException"


class ConflictException(ClientError):
    code = "ConflictException"


class InvalidPaginationTokenException(ClientError):
    code = "InvalidPaginationTokenException"


class AccessDeniedException(ClientError):
    code = "AccessDeniedException"


class ValidationException(ClientError):
    code = "ValidationException"


class PolicyRefusedException(AccessDeniedException):
    """A collection policy refused the operation; on the wire it is an AccessDeniedException."""


class ThrottlingException(ClientError):
    code = "ThrottlingException"


class ProvisionedThroughputExceededException(ClientError):
    code = "ProvisionedThroughputExceededException"


class VideoTooLargeException(ClientError):
    code = "VideoTooLargeException"


class LimitExceededException(ClientError):
    code = "LimitExceededException"


class UnknownOperationException(ClientError):
    code = "UnknownOperationException"


class SerializationException(ClientError):
    code = "SerializationException"


class RequestTimeoutException(ClientError):
    """The request body did not arrive in time (too slow on average, or too long in total)."""

    code = "RequestTimeoutException"
    status = 408


class AuthError(FaceledgerError):
    status = 403


class UnrecognizedClientException(AuthError):
    code = "UnrecognizedClientException"


class InvalidSignatureException(AuthError):
    code = "InvalidSignatureException"


class IncompleteSignatureException(AuthError):
    code = "IncompleteSignatureException"


class MissingAuthenticationTokenException(AuthError):
    code = "MissingAuthenticationTokenException"


class ExpiredTokenException(InvalidSignatureException):
    """AWS answers an expired SigV4 request with InvalidSignatureException ("Signature expired")."""


class ReplayedRequestException(ThrottlingException):
    """A signed request arrived again with a signature already received (server/replay.py).

    It is never served. ThrottlingException on the wire, because every SDK retries that code
    and signs the retry anew: botocore signs a retry within the same second byte-identically
    (its amz-sdk-request attempt header is added after signing), so its retry of a request
    that reached the server arrives as a repeat, and must be able to try again."""


class InternalServerError(FaceledgerError):
    code = "InternalServerError"
    status = 500
