"""PipelinePool: the same answers as the in-process pipeline, from worker processes; a worker
that dies is replaced before the next call."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import numpy as np
import psutil
import pytest

from faceledger.imaging import decode_image
from faceledger.service import FaceService
from faceledger.vision.pool import PipelinePool, default_workers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pool(service: FaceService) -> Iterator[PipelinePool]:
    p = PipelinePool(service.settings, 2)
    p.warm_up()  # both processes (the pool otherwise starts them as calls need them)
    yield p
    p.close()


def test_pool_answers_like_the_pipeline(pool: PipelinePool, service: FaceService,
                                        astronaut_jpeg: bytes) -> None:
    pixels = decode_image(astronaut_jpeg).pixels
    here = service.pipeline.analyze(pixels)
    there = pool.analyze(pixels)
    assert len(there) == len(here) >= 1
    for a, b in zip(there, here):
        assert a.box == b.box and a.pose == b.pose and a.quality == b.quality
        assert a.embedding is not None and b.embedding is not None
        assert np.array_equal(a.embedding, b.embedding)
    assert np.array_equal(pool.embed_boxes(pixels, [here[0].box]),
                          service.pipeline.embed_boxes(pixels, [here[0].box]))
    assert pool.embedder.dim == service.pipeline.embedder.dim
    assert pool.model_version == service.pipeline.model_version


def test_a_dead_worker_is_replaced_before_the_next_call(pool: PipelinePool,
                                                        astronaut_jpeg: bytes) -> None:
    """A worker killed between calls costs no call: the pool is replaced before dispatch
    (issue 18: the next request used to fail with InternalServerError)."""
    pixels = decode_image(astronaut_jpeg).pixels
    assert pool.analyze(pixels)
    workers = [c for c in psutil.Process().children() if "spawn_main" in " ".join(c.cmdline())]
    assert len(workers) >= 2
    os.kill(workers[0].pid, signal.SIGKILL)
    workers[0].wait(timeout=30)
    for _ in range(4):
        assert pool.analyze(pixels)
    alive = [c for c in psutil.Process().children() if "spawn_main" in " ".join(c.cmdline())]
    assert workers[0].pid not in {c.pid for c in alive}


def test_default_workers() -> None:
    assert default_workers(3) == 3
    assert default_workers(0) == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError):
        PipelinePool(processes=0)
