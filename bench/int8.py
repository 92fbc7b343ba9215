"""Would an INT8 reid-0095 reach bench/pipeline.py's 10x? Post-training quantisation (NNCF) of
model 2.0's embedder against the float32 network it ships, side by side in one run.

Two steps, because NNCF is not a faceledger dependency (install it in a venv of its own next to
the same `openvino` version; it must not change the project's locked environment):

    python bench/int8.py crops /tmp/int8                  # faceledger's env: aligned faces
    /tmp/nncfenv/bin/python bench/int8.py compare /tmp/int8  # openvino + nncf (+ numpy)

`crops` detects and aligns (faceledger's own YuNet + check + alignment, the largest face) every
image of LFW's 3,200 development pairs, and 400 faces of utkface-more as the quantisation
sample (no labels are used; LFW, the evaluation set, is never in the sample). `compare`
quantises (NNCF's default preset, fast bias correction), then reports for float32 and INT8:
CPU ms per face (one thread, batch 1, best of interleaved rounds, as the pipeline runs it),
the cosine between the two templates of each face, and LFW dev-pair accuracy over 10 folds
(threshold chosen on 9, tested on 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
FACES = REPO.parent / "shared" / "faces"
XML = (REPO / "src/faceledger/vision/weights/face-reidentification-retail-0095/"
       "face-reidentification-retail-0095.xml")


def crops(out: Path) -> None:
    from faceledger.evaluation.datasets import load_pairs
    from faceledger.imaging import decode_image
    from faceledger.settings import Settings
    from faceledger.vision import FacePipeline
    from faceledger.vision.openvino_models import ReidEmbedder

    pipe = FacePipeline(Settings(data_dir=out / "data"))
    embedder = pipe.embedder
    assert isinstance(embedder, ReidEmbedder), "the configured model must be 2.0"

    def largest(path: Path) -> Any:
        pixels = decode_image(path.read_bytes()).pixels
        found = pipe.detect(pixels)
        if not found or found[0].landmarks is None:
            return None
        return embedder.aligned(pixels, [found[0].landmarks])[0]

    lfw = FACES / "lfw"
    lists = [load_pairs(lfw / name) for name in ("pairsDevTrain.txt", "pairsDevTest.txt")]
    pairs = [(pl.images.keys[a], pl.images.keys[b], int(same))
             for pl in lists for a, b, same in zip(pl.a, pl.b, pl.same)]
    images = sorted({key for a, b, _ in pairs for key in (a, b)})
    index = {k: n for n, k in enumerate(images)}
    faces = np.zeros((len(images), 128, 128, 3), np.uint8)
    found = np.zeros(len(images), bool)
    for n, key in enumerate(images):
        face = largest(lfw / key)
        if face is not None:
            faces[n], found[n] = face, True
    utk = sorted((FACES / "utkface-more").rglob("*.jpg"))
    sample: list[Any] = []
    for k in np.random.default_rng(0).permutation(len(utk)):
        face = largest(utk[k])
        if face is not None:
            sample.append(face)
        if len(sample) == 400:
            break
    pair_index = np.array([(index[a], index[b], same) for a, b, same in pairs])
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "crops.npz", faces=faces, found=found, pairs=pair_index,
             sample=np.stack(sample))
    print(f"{len(images)} LFW images ({int(found.sum())} with a face), {len(sample)} sample "
          f"faces -> {out / 'crops.npz'}")


def bgr_nchw(faces: Any) -> Any:
    return np.ascontiguousarray(faces[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)


def templates(net: Any, faces: Any) -> Any:
    request = net.create_infer_request()
    out = np.zeros((len(faces), 256), np.float32)
    for i in range(len(faces)):
        out[i] = np.asarray(request.infer({0: bgr_nchw(faces[i:i + 1])})[net.output(0)]).ravel()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def ten_fold_accuracy(scores: Any, same: Any) -> tuple[float, float]:
    """Mean and SD of accuracy over 10 random folds, the threshold chosen on the other 9.
    (bench/calibration_2_0.ten_fold imports faceledger, which the nncf venv does not have.)"""
    folds = np.array_split(np.random.default_rng(0).permutation(len(scores)), 10)
    accuracies = []
    for fold in folds:
        train = np.setdiff1d(np.arange(len(scores)), fold)
        best = max(np.unique(scores[train]),
                   key=lambda t: float(np.mean((scores[train] >= t) == same[train])))
        accuracies.append(float(np.mean((scores[fold] >= best) == same[fold])))
    return float(np.mean(accuracies)), float(np.std(accuracies))


def compare(work: Path, rounds: int) -> None:
    try:
        import nncf  # type: ignore[import-not-found]
        import openvino as ov
    except ImportError as exc:
        sys.exit(f"compare needs openvino and nncf ({exc}); see this script's docstring")
    data = np.load(work / "crops.npz")
    faces, found, pairs = data["faces"], data["found"], data["pairs"]
    core = ov.Core()
    model = core.read_model(str(XML))
    quantised = nncf.quantize(model, nncf.Dataset(list(data["sample"]),
                                                  lambda f: bgr_nchw(f[None])),
                              subset_size=len(data["sample"]))
    config = {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32",
              "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}  # as vision/openvino_models
    nets = {"float32": core.compile_model(model, "CPU", config),
            "int8": core.compile_model(quantised, "CPU", config)}
    timed = faces[found][:300]
    cpu: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(rounds):
        for name, net in nets.items():
            t = time.process_time()
            templates(net, timed)
            cpu[name].append((time.process_time() - t) / len(timed) * 1000)
    made = {name: templates(net, faces) for name, net in nets.items()}
    cosine = np.sum(made["float32"] * made["int8"], axis=1)[found]
    usable = found[pairs[:, 0]] & found[pairs[:, 1]]
    same = pairs[usable, 2].astype(bool)
    print(f"reid-0095, float32 against INT8 (NNCF {nncf.__version__}, OpenVINO "
          f"{ov.__version__}); {len(timed)} faces timed, {int(usable.sum())} LFW dev pairs\n")
    print("| | CPU ms per face (best of rounds) | LFW dev pairs, 10 folds, mean +- SD |")
    print("|---|---|---|")
    for name, t in made.items():
        scores = np.sum(t[pairs[usable, 0]] * t[pairs[usable, 1]], axis=1)
        mean, sd = ten_fold_accuracy(scores, same)
        print(f"| {name} | {min(cpu[name]):.2f} ({', '.join(f'{x:.2f}' for x in cpu[name])}) "
              f"| {mean:.2%} +- {sd:.2%} |")
    print(f"\nINT8 / float32 CPU per face: {min(cpu['int8']) / min(cpu['float32']):.2f}; "
          f"cosine between a face's two templates: median {np.median(cosine):.4f}, "
          f"1st percentile {np.percentile(cosine, 1):.4f}, min {cosine.min():.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["crops", "compare"])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.step == "crops":
        crops(args.workdir)
    else:
        compare(args.workdir, args.rounds)


if __name__ == "__main__":
    main()
