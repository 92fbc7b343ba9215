"""faceledger's HTTP server: Amazon Rekognition's JSON protocol with AWS SigV4 authentication.

    protocol   X-Amz-Target dispatch, botocore-model validation, JSON rendering
    sigv4      signature verification with AWS's error codes
    keys       API keys (sealed secrets, per-key operations/collections/rate) in the database
    limits     bounded admission (ThrottlingException) and per-key rates
    storage    Image.S3Object from configured buckets (local directories or S3 via boto3)
    app        the ASGI application; run: uvicorn, from `faceledger serve`
"""

from .app import RekognitionApp
from .keys import KeyStore
from .run import build_app, running, serve

__all__ = ["KeyStore", "RekognitionApp", "build_app", "running", "serve"]
