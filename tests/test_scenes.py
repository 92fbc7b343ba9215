"""Scenes, not crops: the default detector (YuNet + the ONet face check) on generated family and
street photos whose faces are small (20-40 px), turned (in-plane +-30 degrees, squeezed for
yaw), backlit or low-key, a fifth of them Black (tests/scenes.py composes them in memory from
../shared/faces; nothing is written). Every face of 40 px and more must be found, 85% of
every group and condition, and no box may land on the backgrounds (a cat, a coffee cup, a
street, bricks, gravel); "every face a person sees" is the goal, kept as a strict xfail.
docs/accuracy.md, "Detector (model 2.0)", has the same measurement on more scenes and for the
other detectors (`python bench/detectors.py --scenes 36`)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from scenes import CELLS, Scene, match_faces, scene_set

from faceledger.settings import Settings
from faceledger.vision import FacePipeline

N_SCENES = 12  # two of each kind x light: 100-odd faces, 10-ish per sex x race cell


@pytest.fixture(scope="module")
def scenes(faces_dir: Path) -> list[Scene]:
    return list(scene_set(faces_dir, N_SCENES))


@pytest.fixture(scope="module")
def found(scenes: list[Scene]) -> dict[str, tuple[list[bool], int]]:
    """Per scene: which faces the default pipeline found, and its boxes on no face."""
    pipeline = FacePipeline(Settings())
    return {sc.name: match_faces(sc.faces, [d.box for d in pipeline.detect(sc.pixels)])
            for sc in scenes}  # fmt: skip


def test_scenes_are_generated_the_same_every_time(faces_dir: Path, scenes: list[Scene]) -> None:
    again = next(scene_set(faces_dir, 1))
    assert again.name == scenes[0].name
    assert np.array_equal(again.pixels, scenes[0].pixels)
    assert again.faces == scenes[0].faces


def test_scenes_hold_every_group_small_turned_and_badly_lit_faces(scenes: list[Scene]) -> None:
    faces = [f for sc in scenes for f in sc.faces]
    groups = {f.group for f in faces}
    assert groups == set(CELLS)
    black = sum(1 for f in faces if f.group.endswith("/black"))
    assert black >= len(faces) // 5 - 1
    assert sum(1 for f in faces if f.size < 30) >= 20
    assert sum(1 for f in faces if abs(f.angle) >= 15) >= 10
    assert sum(1 for f in faces if f.squeeze <= 0.8) >= 5
    assert {f.condition for f in faces} >= {"small", "turned", "backlit", "low-key"}
    assert all(0 <= f.cx < sc.pixels.shape[1] and 0 <= f.cy < sc.pixels.shape[0]
               for sc in scenes for f in sc.faces)  # fmt: skip


def _per_group(
    scenes: list[Scene], found: dict[str, tuple[list[bool], int]]
) -> tuple[dict[str, list[bool]], list[tuple[str, str, str, int, int]]]:
    per: dict[str, list[bool]] = defaultdict(list)
    missed = []
    for sc in scenes:
        hits, _ = found[sc.name]
        for f, hit in zip(sc.faces, hits):
            sex, race = f.group.split("/")
            for g in (sex, race, f.condition):
                per[g].append(hit)
            if not hit:
                missed.append((sc.name, f.group, f.condition, round(f.size), round(f.angle)))
    return per, missed


def test_every_face_of_40_px_and_more_is_found(
    scenes: list[Scene], found: dict[str, tuple[list[bool], int]]
) -> None:
    """The service's own promise (`min_face_px` 40), in every light and turn."""
    missed = [(sc.name, f.group, f.condition, round(f.size))
              for sc in scenes for f, hit in zip(sc.faces, found[sc.name][0])
              if f.size >= 40 and not hit]  # fmt: skip
    assert not missed


def test_most_faces_are_found_in_every_group_and_condition(
    scenes: list[Scene], found: dict[str, tuple[list[bool], int]]
) -> None:
    """A floor (85%) under today's rates (YuNet_n + check: 102 of 106 here; every race 19 of
    21 or better, turned faces 17 of 19), so that a change which loses small or badly lit
    faces for one group shows; 21 faces per race cannot show a smaller loss."""
    per, missed = _per_group(scenes, found)
    low = {g: f"{sum(v)}/{len(v)}" for g, v in per.items() if sum(v) < 0.85 * len(v)}
    assert not low, f"below 85%: {low}; missed {missed}"


@pytest.mark.xfail(strict=True, reason=(
    "the goal, not yet met: YuNet_n + check misses faces under 20 px that are turned, and "
    "turned faces in low-key light (here 4 of 106, two of them Black faces in low-key light; "
    "298 of 312 on 36 scenes): docs/accuracy.md, 'Detector (model 2.0)'"))
def test_every_face_a_person_sees_is_found_in_every_group(
    scenes: list[Scene], found: dict[str, tuple[list[bool], int]]
) -> None:
    per, missed = _per_group(scenes, found)
    rates = {g: f"{sum(v)}/{len(v)}" for g, v in sorted(per.items())}
    assert not missed, f"missed {missed}; found per group {rates}"


def test_no_box_lands_on_the_backgrounds(found: dict[str, tuple[list[bool], int]]) -> None:
    false = {name: n for name, (_, n) in found.items() if n}
    assert not false, f"boxes on no face: {false}"
