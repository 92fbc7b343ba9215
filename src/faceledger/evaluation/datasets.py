"""Evaluation datasets: folder-per-identity image trees, LFW-format pair lists, and labels files.

- Folder-per-identity: `<root>/<identity>/<image>.jpg|.jpeg|.png` (LFW, most research sets).
- LFW pair lists (http://vis-www.cs.umass.edu/lfw/README.txt):
  View 1 (`pairsDevTrain.txt`): first line N, then N matched lines `name i j` and N mismatched
  lines `name1 i name2 j`. View 2 (`pairs.txt`): first line `folds n`, then per fold n matched
  and n mismatched lines. Image i of `name` is `<root>/<name>/<name>_<iiii>.jpg`.
- Labels: a TSV or CSV file with a header; the first column is an image path relative to the
  dataset root (`AJ_Cook/AJ_Cook_0001.jpg`) or an identity (`AJ_Cook`), the others are
  attributes (`sex`, `race`, `age_band`, ...).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidParameterException

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class ImageSet:
    """Images with identity labels (`identity` indexes `names`); `keys` are root-relative paths."""

    root: Path
    keys: list[str]
    identity: list[int]
    names: list[str]

    @property
    def paths(self) -> list[Path]:
        return [self.root / k for k in self.keys]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class PairList:
    """Pairs of image indices into `images`, whether they are the same person, and their fold."""

    images: ImageSet
    a: list[int]
    b: list[int]
    same: list[bool]
    fold: list[int]
    n_folds: int
    source: str = ""
    notes: list[str] = field(default_factory=list)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES


def load_folders(root: Path) -> ImageSet:
    """Every image under `root/<identity>/`, identities and images in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise InvalidParameterException(f"{root} is not a directory of identity folders.")
    keys: list[str] = []
    identity: list[int] = []
    names: list[str] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in d.iterdir() if _is_image(p))
        if not files:
            continue
        names.append(d.name)
        for f in files:
            keys.append(f"{d.name}/{f.name}")
            identity.append(len(names) - 1)
    if not keys:
        raise InvalidParameterException(
            f"{root} has no <identity>/<image>.jpg|png files (folder-per-identity layout)."
        )
    return ImageSet(root, keys, identity, names)


def load_images(root: Path) -> ImageSet:
    """Every image anywhere under `root`, each its own identity (for detection rates)."""
    root = Path(root)
    if not root.is_dir():
        raise InvalidParameterException(f"{root} is not a directory.")
    files = sorted(p for p in root.rglob("*") if _is_image(p))
    if not files:
        raise InvalidParameterException(f"{root} has no .jpg or .png images.")
    keys = [str(p.relative_to(root)) for p in files]
    return ImageSet(root, keys, list(range(len(keys))), keys)


def load_image_roots(roots: Sequence[Path]) -> ImageSet:
    """Every image under each root (`load_images`), as one set of distinct images keyed by paths
    relative to the roots' common parent (utkface-balanced and utkface-more together)."""
    paths = [Path(r) for r in roots]
    if len(paths) == 1:
        return load_images(paths[0])
    sets = [load_images(r) for r in paths]
    parent = Path(os.path.commonpath([str(r.resolve()) for r in paths]))
    keys = [str((s.root.resolve() / k).relative_to(parent)) for s in sets for k in s.keys]
    if len(set(keys)) != len(keys):
        raise InvalidParameterException("the image folders overlap: give each folder once.")
    return ImageSet(parent, keys, list(range(len(keys))), keys)


def lfw_image_key(name: str, number: int) -> str:
    """LFW's file naming: `Name/Name_0001.jpg`."""
    return f"{name}/{name}_{number:04d}.jpg"


def load_pairs(pairs_file: Path, root: Path | None = None) -> PairList:
    """An LFW-format pair list (View 1 or View 2); `root` defaults to the file's folder."""
    pairs_file = Path(pairs_file)
    root = Path(root) if root is not None else pairs_file.parent
    try:
        lines = [ln.split() for ln in pairs_file.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidParameterException(f"cannot read pair list {pairs_file}: {exc}") from exc
    lines = [ln for ln in lines if ln]
    if not lines or not all(re.fullmatch(r"\d+", t) for t in lines[0]) or len(lines[0]) > 2:
        raise InvalidParameterException(
            f"{pairs_file}: first line must be 'N' (View 1) or 'folds N' (View 2)."
        )
    header = [int(t) for t in lines[0]]
    n_folds, per_class = (1, header[0]) if len(header) == 1 else (header[0], header[1])
    body = lines[1:]
    if len(body) != 2 * n_folds * per_class:
        raise InvalidParameterException(
            f"{pairs_file}: header promises {2 * n_folds * per_class} pairs, found {len(body)}."
        )
    keys: dict[str, int] = {}
    ident: dict[str, int] = {}
    a: list[int] = []
    b: list[int] = []
    same: list[bool] = []
    fold: list[int] = []

    def image(name: str, num: str, lineno: int) -> int:
        if not re.fullmatch(r"\d+", num):
            raise InvalidParameterException(f"{pairs_file}:{lineno}: bad image number {num!r}.")
        key = lfw_image_key(name, int(num))
        if key not in keys:
            if not (root / key).is_file():
                raise InvalidParameterException(f"{pairs_file}:{lineno}: {root / key} not found.")
            keys[key] = len(keys)
            ident.setdefault(name, len(ident))
        return keys[key]

    for n, parts in enumerate(body):
        lineno = n + 2
        if len(parts) == 3:
            a.append(image(parts[0], parts[1], lineno))
            b.append(image(parts[0], parts[2], lineno))
            same.append(True)
        elif len(parts) == 4:
            a.append(image(parts[0], parts[1], lineno))
            b.append(image(parts[2], parts[3], lineno))
            same.append(parts[0] == parts[2])
        else:
            raise InvalidParameterException(
                f"{pairs_file}:{lineno}: expected 'name i j' or 'name1 i name2 j'."
            )
        fold.append(n // (2 * per_class))
    names = list(ident)
    key_list = list(keys)
    identity = [ident[k.split("/", 1)[0]] for k in key_list]
    images = ImageSet(root, key_list, identity, names)
    return PairList(images, a, b, same, fold, n_folds, source=str(pairs_file))


@dataclass(frozen=True)
class Labels:
    """Attributes per image key or per identity name, as read from a labels file."""

    attributes: list[str]
    by_key: dict[str, dict[str, str]]

    def for_image(self, key: str, identity: str) -> dict[str, str]:
        """The image's own labels, else its identity's, else empty."""
        return self.by_key.get(key) or self.by_key.get(identity) or {}


def load_labels(path: Path) -> Labels:
    """A TSV/CSV labels file with a header row (first column: image key or identity)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidParameterException(f"cannot read labels file {path}: {exc}") from exc
    first = text.splitlines()[0] if text else ""
    delimiter = "\t" if "\t" in first else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    if len(rows) < 2 or len(rows[0]) < 2:
        raise InvalidParameterException(
            f"{path}: labels need a header row 'image<TAB>attribute...' and at least one row."
        )
    attributes = [h.strip() for h in rows[0][1:]]
    by_key: dict[str, dict[str, str]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(rows[0]):
            raise InvalidParameterException(
                f"{path}:{n}: expected {len(rows[0])} columns, found {len(row)}."
            )
        by_key[row[0].strip()] = {k: v.strip() for k, v in zip(attributes, row[1:])}
    return Labels(attributes, by_key)


# UTKFace file names: age_gender_race_date.jpg.chip.jpg (gender 0 male 1 female;
# race 0 white, 1 black, 2 asian, 3 indian, 4 other).
_UTK_SEX = {"0": "male", "1": "female"}
_UTK_RACE = {"0": "white", "1": "black", "2": "asian", "3": "indian", "4": "other"}


def age_band(age: int) -> str:
    """Ten-year age bands (`0-9`, ..., `70+`)."""
    return "70+" if age >= 70 else f"{age // 10 * 10}-{age // 10 * 10 + 9}"


ADULT_AGE = 18


def age_group(age: int) -> str:
    """`child` under 18, `adult` from 18: children's faces match far more often by mistake
    (docs/accuracy.md), so they get rows of their own."""
    return "child" if age < ADULT_AGE else "adult"


def utkface_labels(images: ImageSet) -> Labels:
    """Sex, race, age band and age group from UTKFace file names (images whose name does not
    parse are left unlabelled)."""
    by_key: dict[str, dict[str, str]] = {}
    for key in images.keys:
        m = re.fullmatch(r"(\d+)_([01])_([0-4])_.*", Path(key).name)
        if m:
            by_key[key] = {
                "sex": _UTK_SEX[m.group(2)],
                "race": _UTK_RACE[m.group(3)],
                "age_band": age_band(int(m.group(1))),
                "age_group": age_group(int(m.group(1))),
            }
    return Labels(["sex", "race", "age_band", "age_group"], by_key)


HALVES = ("fit", "test")


# How a set of distinct people is split in two, by file name alone (anyone gets the same split):
# - "name-sha256" (the first, used for model 1.0's table): parity of the first byte of SHA-256
#   of the file name. utkface-more's names all fall into its `fit` half (their first digest
#   byte is even), so it cannot hold any of that set out;
# - "salted-sha256" (model 2.0's table): the same with a salt, which splits both UTKFace
#   folders about evenly (and differs from the first split).
SPLITS = ("name-sha256", "salted-sha256")
DEFAULT_SPLIT = "name-sha256"
_SALT = b"faceledger people split 2\x00"


def people_half(key: str, split: str = DEFAULT_SPLIT) -> str:
    """Which half of a set of distinct people an image belongs to, from its file name alone
    (so anyone gets the same split; see SPLITS): a table's calibration and score normalisation
    are fitted on the `fit` half, never on `test`."""
    name = Path(key).name.encode("utf-8")
    if split == "name-sha256":
        digest = hashlib.sha256(name).digest()
    elif split == "salted-sha256":
        digest = hashlib.sha256(_SALT + name).digest()
    else:
        raise InvalidParameterException(f"split must be one of {', '.join(SPLITS)}.")
    return HALVES[digest[0] & 1]


def select_half(
    images: ImageSet,
    half: str,
    person: Sequence[int] | NDArray[np.int64] | None = None,
    split: str = DEFAULT_SPLIT,
) -> ImageSet:
    """The images of one half (`fit` or `test`), each still its own identity. With `person`
    (an index into `images.keys` per image: the first image of the same person, from a
    reviewed duplicate list), every image of a person goes to the half of that first image."""
    if half not in HALVES:
        raise InvalidParameterException(f"half must be one of {', '.join(HALVES)}.")
    first = list(range(len(images.keys))) if person is None else [int(p) for p in person]
    keys = [k for k, p in zip(images.keys, first) if people_half(images.keys[p], split) == half]
    return ImageSet(images.root, keys, list(range(len(keys))), keys)
