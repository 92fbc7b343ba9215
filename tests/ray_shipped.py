"""A Ray driver that records everything it hands Ray to send (run by tests/test_ray_cluster.py).

It joins the cluster at argv[1] through `faceledger.cluster.connect`, as `--ray` does, with
Settings full of secrets (read from stdin as JSON, so they are in no command line or
environment Ray could copy), then runs the two paths that use actors: `collection index --ray`
(`bulk.index_images_ray`, writing to a SQLite database whose file name is a secret too) and
`evaluate --ray` (`enrolment.enrol_files`), on the photos under argv[2].

Every value Ray serialises in this process (actor constructor arguments, each call's arguments,
`ray.put`) passes through `SerializationContext.serialize`: a spy there keeps a cloudpickle of
it. The script prints, as JSON, how many values were shipped, which secrets were found in them,
and two checks that the spy saw real content (a WorkerSettings and a photo's path).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import ray.cloudpickle
from pydantic import SecretStr
from ray._private.serialization import SerializationContext

from faceledger.bulk import find_images, index_images_ray
from faceledger.cluster import connect
from faceledger.evaluation.enrolment import enrol_files
from faceledger.service import FaceService
from faceledger.settings import Settings

shipped: list[bytes] = []
original = SerializationContext.serialize


def spy(self: SerializationContext, value: Any) -> Any:
    shipped.append(ray.cloudpickle.dumps(value))
    return original(self, value)


def main() -> None:
    address, photos, data = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    secret = json.load(sys.stdin)
    settings = Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / secret['database_file']}",
        key_encryption_key=SecretStr(secret["kek"]),
        s3_buckets=["evidence"],
        s3_access_key_id=secret["s3_key_id"],
        s3_secret_access_key=SecretStr(secret["s3_secret"]),
        sns_access_key_id=secret["sns_key_id"],
        sns_secret_access_key=SecretStr(secret["sns_secret"]),
    )
    SerializationContext.serialize = spy  # type: ignore[method-assign]
    connect(address)
    images = find_images([photos], "parent")
    service = FaceService(settings)
    service.create_collection("shipped")
    summary = index_images_ray(service, "shipped", images, batch_size=2)
    service.close()
    enrolled = enrol_files([i.path for i in images], settings=settings, ray=address,
                           progress=False)
    print(json.dumps({
        "images": len(images),
        "indexed": summary.indexed,
        "enrolled": sum(e.enrolled for e in enrolled),
        "shipped": len(shipped),
        "leaks": sorted(name for name, value in secret.items()
                        if any(value.encode() in blob for blob in shipped)),
        "worker_settings": sum(b"WorkerSettings" in blob for blob in shipped),
        "photo_paths": sum(str(images[0].path).encode() in blob for blob in shipped),
    }))


if __name__ == "__main__":
    main()
