"""Faces of many images through the embedder together (bulk work): the same faces and the same
templates as image by image, for every model, whatever the run length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceledger.imaging import decode_image
from faceledger.settings import Settings
from faceledger.vision import FacePipeline
from faceledger.vision.batching import embed_many
from faceledger.vision.types import BatchEmbedder, RGBImage


@pytest.fixture(scope="module")
def images(faces_dir: Path, astronaut_jpeg: bytes) -> list[RGBImage]:
    lfw = sorted((faces_dir / "lfw").glob("*/*.jpg"))[:40:8]
    noise = np.random.default_rng(11).integers(0, 256, size=(200, 240, 3), dtype=np.uint8)
    return ([decode_image(astronaut_jpeg).pixels] + [decode_image(p.read_bytes()).pixels for p in lfw]
            + [noise])  # fmt: skip


@pytest.mark.parametrize("embedder", ["reid-0095", "reid-0095+sface"])
def test_a_batch_of_images_gives_what_each_image_gives(
    embedder: str, images: list[RGBImage], tmp_path: Path
) -> None:
    # runs of 3 faces: runs cross image boundaries, and an image without a face is in the middle
    pipeline = FacePipeline(Settings(embedder=embedder, embed_batch=3, data_dir=tmp_path))
    assert isinstance(pipeline.embedder, BatchEmbedder)
    alone = [pipeline.analyze(p) for p in images]
    together = pipeline.analyze_batch(images)
    assert [len(f) for f in together] == [len(f) for f in alone]
    assert sum(len(f) for f in alone) >= 6 and alone[-1] == []  # noise: no face
    for mine, theirs in zip(together, alone):
        for a, b in zip(mine, theirs):
            assert a.box == b.box and a.pose == b.pose and a.quality == b.quality
            assert a.embedding is not None and b.embedding is not None
            assert float(np.abs(a.embedding - b.embedding).max()) < 1e-5
    items = [(p, [f.box for f in fs], [f.landmarks for f in fs]) for p, fs in zip(images, alone)]
    for vectors, fs in zip(pipeline.embed_many(items), alone):
        assert vectors.shape == (len(fs), pipeline.embedder.dim)
        for v, f in zip(vectors, fs):
            assert f.embedding is not None and float(np.abs(v - f.embedding).max()) < 1e-5


def test_an_embedder_without_runs_embeds_image_by_image(images: list[RGBImage],
                                                        tmp_path: Path) -> None:
    # dlib's ResNet (model 1.0) has no runs across images: embed_many falls back to `embed`
    pipeline = FacePipeline(Settings(embedder="dlib", detector="hog", data_dir=tmp_path))
    embedder = pipeline.embedder
    assert not isinstance(embedder, BatchEmbedder)
    found = [pipeline.analyze(p, embed=False) for p in images[:3]] + [[]]
    items = [(p, [f.box for f in fs], None) for p, fs in zip(images, found)]
    out = embed_many(embedder, items, 8)
    assert [len(v) for v in out] == [len(fs) for fs in found]
    for (p, boxes, _), v in zip(items, out):
        if boxes:
            assert np.array_equal(v, embedder.embed(p, boxes))


def test_bulk_index_and_evaluation_send_images_in_batches(
    faces_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the real pipeline, watched: how many images each analysis call is given
    from faceledger.bulk import find_images, index_images
    from faceledger.evaluation.enrolment import enrol_bytes, enrol_files
    from faceledger.service import FaceService

    settings = Settings(data_dir=tmp_path / "data", embed_batch=3)
    service = FaceService(settings)
    calls: list[int] = []
    real = service.pipeline.analyze_batch

    def watched(images: list[RGBImage], **kw: object) -> list[object]:
        calls.append(len(images))
        return real(images, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(service.pipeline, "analyze_batch", watched)
    people = sorted(p for p in (faces_dir / "lfw").iterdir() if p.is_dir())[:7]
    photos = [sorted(p.glob("*.jpg"))[0] for p in people]
    service.create_collection("batched")
    summary = index_images(service, "batched", find_images(photos, "parent"), threads=1)
    assert calls == [3, 3, 1]  # 7 images in batches of 3, each image its own IndexFaces
    assert summary.indexed == 7 and summary.done == 7
    again = index_images(service, "batched", find_images(photos, "parent"), threads=1)
    assert again.skipped == 7 and calls == [3, 3, 1]  # known by digest: never analysed
    # evaluation: batches of 3 in one process give what each image gives alone
    together = enrol_files(photos, settings=settings, workers=1, progress=False)
    pipeline = FacePipeline(settings)
    for path, e in zip(photos, together):
        alone = enrol_bytes(pipeline, path.read_bytes(), embed=True)
        assert e.sha256 == alone.sha256 and e.n_faces == alone.n_faces
        assert e.embedding is not None and alone.embedding is not None
        assert float(np.abs(e.embedding - alone.embedding).max()) < 1e-5
