"""One face under two names: reviewed near-duplicate pairs of a set of "distinct people".

UTKFace holds some identical images under two file names and some people twice (at different
ages, or with different labels). In a set assumed to be one person per image such pairs pose as
false matches at the strictest thresholds, so they are found (with more than one model), looked
at by a person, and listed in small files of names shipped with the package (file names only,
no images) for utkface-balanced + utkface-more: `data/utkface-duplicates.tsv` (the review made
with models 2.0 and 1.0; model 2.0's table was built with it, and it stays as it was) and
`data/utkface-duplicates-3.0.tsv` (the review made with model 3.0 and SFace), read in that order:
a later file's row decides its pair, replacing an earlier verdict for the same two names.

The file is a TSV with a header: `a  b  verdict  note`, where `a` and `b` are file names (no
folders: the two UTKFace folders never share one), and verdict is

- `same-image`: the same photograph (possibly re-cropped or re-encoded),
- `same-person`: two photographs of one person,
- `different`: reviewed and judged two people: listed so that the review is not repeated; such a
  pair stays an impostor pair.

Images joined by `same-*` verdicts form one person (a cluster): pairs within a cluster are
never counted as impostor pairs, a person's images all fall into the same half of a fit/test
split (the half of the cluster's first file name), and the bootstrap resamples clusters.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidParameterException

VERDICTS = ("same-image", "same-person", "different")
SAME = ("same-image", "same-person")
UTKFACE_DUPLICATES = "utkface-duplicates.tsv"
# the reviews after the first, in order: each may decide pairs anew
UTKFACE_DUPLICATE_REVIEWS = (UTKFACE_DUPLICATES, "utkface-duplicates-3.0.tsv")


@dataclass(frozen=True)
class DuplicatePair:
    a: str
    b: str
    verdict: str
    note: str = ""


@dataclass(frozen=True)
class DuplicateList:
    """Reviewed pairs, by file name."""

    pairs: tuple[DuplicatePair, ...]
    source: str

    @property
    def same(self) -> list[DuplicatePair]:
        return [p for p in self.pairs if p.verdict in SAME]

    def counts(self) -> dict[str, int]:
        return {v: sum(p.verdict == v for p in self.pairs) for v in VERDICTS}

    def clusters(self, keys: Sequence[str]) -> NDArray[np.int64]:
        """A person id per key (keys are paths; their file names are matched): images joined
        by a `same-*` pair share an id, every other image is its own person. Ids are the index
        of the cluster's first key in `keys`."""
        names = [Path(k).name for k in keys]
        index = {n: i for i, n in enumerate(names)}
        parent = list(range(len(keys)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for p in self.same:
            ia, ib = index.get(p.a), index.get(p.b)
            if ia is None or ib is None:
                continue
            ra, rb = find(ia), find(ib)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        return np.array([find(i) for i in range(len(keys))], dtype=np.int64)


def load_duplicates(path: Path) -> DuplicateList:
    """Read a reviewed duplicate list (TSV: a, b, verdict, note)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidParameterException(f"cannot read duplicate list {path}: {exc}") from exc
    return parse_duplicates(text.splitlines(), str(path))


def parse_duplicates(lines: Iterable[str], source: str) -> DuplicateList:
    rows = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    reader = csv.reader(rows, delimiter="\t")
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:3]] != ["a", "b", "verdict"]:
        raise InvalidParameterException(
            f"duplicate list {source}: the header must start with a, b, verdict (TAB-separated)."
        )
    out = []
    for n, row in enumerate(reader, start=2):
        if len(row) < 3 or row[2].strip() not in VERDICTS:
            raise InvalidParameterException(
                f"duplicate list {source}, row {n}: need a, b and a verdict of "
                f"{', '.join(VERDICTS)}."
            )
        a, b = Path(row[0].strip()).name, Path(row[1].strip()).name
        out.append(DuplicatePair(a, b, row[2].strip(), row[3].strip() if len(row) > 3 else ""))
    return DuplicateList(tuple(out), source)


def shipped_duplicates(reviews: Sequence[str] = UTKFACE_DUPLICATE_REVIEWS) -> DuplicateList:
    """The reviewed list for utkface-balanced + utkface-more shipped with the package: every
    review, in order (`reviews`: file names under evaluation/data)."""
    data = resources.files("faceledger.evaluation") / "data"
    return merged([parse_duplicates((data / name).read_text(encoding="utf-8").splitlines(),
                                    f"faceledger:{name}") for name in reviews])


def merged(lists: Sequence[DuplicateList]) -> DuplicateList:
    """Several reviews as one list: a pair's verdict is the last review's that decides it."""
    by_pair: dict[frozenset[str], DuplicatePair] = {}
    for dl in lists:
        for p in dl.pairs:
            by_pair.pop(frozenset((p.a, p.b)), None)  # re-decided: it moves to the end
            by_pair[frozenset((p.a, p.b))] = p
    return DuplicateList(tuple(by_pair.values()), " + ".join(dl.source for dl in lists))


def same_person_mask(
    person_a: NDArray[np.int64], person_b: NDArray[np.int64]
) -> NDArray[np.bool_]:
    """Pairs (broadcast) whose two images are one person by the list."""
    return np.asarray(person_a == person_b, dtype=np.bool_)
