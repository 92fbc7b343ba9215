"""Would INT8 SFace make model 3.0 cheap enough? Post-training static quantisation (ONNX Runtime's
quantiser, which faceledger's environment has) of SFace's folded float32 graph, both run on
OpenVINO (which uses AVX-512 VNNI / AVX-VNNI where the CPU has them), side by side in one run.

    python bench/int8_sface.py /tmp/int8-sface            # crops once (~10 min), then compare

Crops: the face each LFW image is enrolled with (the one nearest the centre, faceledger's own
YuNet + check + landmarks), aligned for SFace (112) and reid-0095 (128), and 400 utkface-more
faces as the quantisation sample (LFW, the evaluation set, is never in the sample). Quantised:
QDQ, symmetric int8 activations and per-channel int8 weights (asymmetric uint8 activations were
slower than float32 on OpenVINO: their zero points are subtracted in float). Reported: CPU ms
per face (one thread, one face per run, best of interleaved rounds), the cosine between a face's
float32 and INT8 templates, and TAR at FMR 1e-3 / 1e-4 / 1e-5 over every LFW cross-identity pair
for SFace alone and for model 3.0 (reid-0095 float32 fused with either SFace).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
FACES = REPO.parent / "shared" / "faces"


def crops(out: Path) -> None:
    from faceledger.evaluation.datasets import load_folders
    from faceledger.evaluation.enrolment import central_face
    from faceledger.imaging import decode_image
    from faceledger.settings import Settings
    from faceledger.vision import FacePipeline
    from faceledger.vision.align import aligned_faces
    from faceledger.vision.openvino_models import REID_SIZE, REID_TEMPLATE
    from faceledger.vision.sface import SFACE_SIZE, SFACE_TEMPLATE

    pipe = FacePipeline(Settings(data_dir=out / "data"))

    def central(path: Path) -> Any:
        pixels = decode_image(path.read_bytes(), min_side=1).pixels
        found = pipe.analyze(pixels, embed=False)
        if not found:
            return None, None
        f = found[central_face(found, pixels.shape[1], pixels.shape[0])]
        return pixels, f.landmarks

    lfw = load_folders(FACES / "lfw")
    n = len(lfw.paths)
    sface = np.zeros((n, SFACE_SIZE, SFACE_SIZE, 3), np.uint8)
    reid = np.zeros((n, REID_SIZE, REID_SIZE, 3), np.uint8)
    ok = np.zeros(n, bool)
    for i, path in enumerate(lfw.paths):
        pixels, lm = central(Path(path))
        if lm is not None:
            sface[i] = aligned_faces(pixels, [lm], SFACE_TEMPLATE, SFACE_SIZE)[0]
            reid[i] = aligned_faces(pixels, [lm], REID_TEMPLATE, REID_SIZE)[0]
            ok[i] = True
    utk = sorted((FACES / "utkface-more").rglob("*.jpg"))
    sample: list[Any] = []
    for k in np.random.default_rng(0).permutation(len(utk)):
        pixels, lm = central(utk[k])
        if lm is not None:
            sample.append(aligned_faces(pixels, [lm], SFACE_TEMPLATE, SFACE_SIZE)[0])
        if len(sample) == 400:
            break
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "crops.npz", sface=sface, reid=reid, ok=ok,
             identity=np.asarray(lfw.identity), sample=np.stack(sample))


def quantise(folded: Path, sample: Any, target: Path) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader, QuantFormat, QuantType, quantize_static,
    )  # fmt: skip
    from onnxruntime.quantization.shape_inference import quant_pre_process

    x = np.ascontiguousarray(sample.transpose(0, 3, 1, 2), dtype=np.float32)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, Any] | None:
            if self.i >= len(x):
                return None
            self.i += 8
            return {"data": x[self.i - 8:self.i]}

    pre = target.with_suffix(".pre.onnx")
    quant_pre_process(str(folded), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(target), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


def templates(compiled: Any, x: Any, dim: int) -> Any:
    from faceledger.vision.openvino_models import infer_templates

    return np.vstack([infer_templates(compiled, x[i:i + 32], dim) for i in range(0, len(x), 32)])


def tar(t: Any, identity: Any) -> list[float]:
    from faceledger.rates import cross_identity_distances, threshold_for_fmr

    imp = np.sort(cross_identity_distances(t, identity))
    genuine = []
    for pid in np.unique(identity):
        idx = np.flatnonzero(identity == pid)
        if len(idx) > 1:
            d = np.linalg.norm(t[idx][:, None] - t[idx][None], axis=2)
            genuine += list(d[np.triu_indices(len(idx), 1)])
    g = np.array(genuine)
    return [float(np.mean(g <= threshold_for_fmr(imp, f))) for f in (1e-3, 1e-4, 1e-5)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import os

    from faceledger.vision.onnx_fold import cached_folded
    from faceledger.vision.openvino_models import REID_XML, openvino_model
    from faceledger.vision.sface import SFACE_FILE
    from faceledger.vision.weights import weight_file

    if not (args.workdir / "crops.npz").is_file():
        crops(args.workdir)
    data = np.load(args.workdir / "crops.npz")
    ok = data["ok"]
    identity = data["identity"][ok]
    folded = cached_folded(weight_file(SFACE_FILE), args.workdir / "models")
    int8 = Path(tempfile.mkdtemp()) / "sface-int8.onnx"
    quantise(folded, data["sample"], int8)
    nets = {"float32": openvino_model(folded, 1), "int8": openvino_model(int8, 1, "data")}
    x = np.ascontiguousarray(data["sface"][ok].transpose(0, 3, 1, 2), dtype=np.float32)
    timed = x[:300]
    cpu: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(args.rounds):
        for name, net in nets.items():
            request = net.create_infer_request()
            t = time.process_time()
            for i in range(len(timed)):
                request.infer({0: timed[i:i + 1]})
            cpu[name].append((time.process_time() - t) / len(timed) * 1000)
    made = {name: templates(net, x, 128) for name, net in nets.items()}
    reid_x = np.ascontiguousarray(data["reid"][ok][..., ::-1].transpose(0, 3, 1, 2),
                                  dtype=np.float32)
    reid = templates(openvino_model(weight_file(REID_XML), 1, batch_input="0"), reid_x, 256)
    cosine = np.sum(made["float32"] * made["int8"], axis=1)
    print(f"load average {os.getloadavg()[0]:.1f}; {len(timed)} faces timed, {len(x)} LFW "
          "faces (every cross-identity pair)\n")
    print("| SFace | CPU ms per face (rounds) | SFace TAR at FMR 1e-3 / 1e-4 / 1e-5 | "
          "model 3.0 TAR at FMR 1e-3 / 1e-4 / 1e-5 |")
    print("|---|---|---|---|")
    for name, t in made.items():
        fused = np.hstack([reid, t]) / np.sqrt(2.0)
        print(f"| {name} | {min(cpu[name]):.2f} ({', '.join(f'{v:.2f}' for v in cpu[name])}) | "
              + " / ".join(f"{v:.4f}" for v in tar(t, identity)) + " | "
              + " / ".join(f"{v:.4f}" for v in tar(fused, identity)) + " |")
    print(f"\nINT8 / float32 CPU per face: {min(cpu['int8']) / min(cpu['float32']):.2f}; cosine "
          f"between a face's two templates: median {np.median(cosine):.4f}, 1st percentile "
          f"{np.percentile(cosine, 1):.4f}, min {cosine.min():.4f}")


if __name__ == "__main__":
    main()
