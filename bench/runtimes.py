"""Which runtime for models 2.0's and 3.0's networks: OpenVINO against ONNX Runtime (and OpenCV's
DNN module for SFace), side by side.

- face-reidentification-retail-0095: OpenVINO reads Intel's IR files; ONNX Runtime runs our
  own translation of the same files (vision/openvino_ir/, equal to 1e-5). Batches of 1, 8, 32.
- SFace (model 3.0's second network): OpenVINO and ONNX Runtime run the graph with its
  block-quantised weights folded into float32 (vision/onnx_fold.py); OpenCV's DNN runs the
  published block-quantised file through cv2.FaceRecognizerSF, one face per call (its API).
  Batches of 1, 8, 32.
- YuNet (n and s, dynamic-size export): both runtimes read the same ONNX file, at the input
  sizes the pipeline gives it (LFW's 250 px, 640x480, a 1280 px long side).
One thread each, as the pipeline runs them (one worker process per core); CPU time per call,
best of --rounds interleaved rounds, so load from other processes disturbs both alike.

    python bench/runtimes.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]


def cpu_ms(fn: Callable[[], object], calls: int) -> float:
    fn()
    t0 = time.process_time()
    for _ in range(calls):
        fn()
    return 1000 * (time.process_time() - t0) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args()

    import openvino as ov

    from faceledger.vision.onnx_models import ort_session
    from faceledger.vision.openvino_ir import build_onnx, read_ir
    import cv2

    from faceledger.vision.onnx_fold import cached_folded
    from faceledger.vision.openvino_models import REID_XML, openvino_model
    from faceledger.vision.sface import SFACE_FILE
    from faceledger.vision.weights import weight_file

    cv2.setNumThreads(1)  # one thread, as the pipeline runs every network
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str, float, float, float | None]] = []

    xml = weight_file(REID_XML)
    onnx_path = Path(tempfile.mkdtemp()) / "reid.onnx"
    onnx_path.write_bytes(build_onnx(read_ir(xml)).SerializeToString())
    ov_reid = openvino_model(xml, 1, batch_input="0")
    ort_reid = ort_session(onnx_path, 1)
    folded = cached_folded(weight_file(SFACE_FILE), Path(tempfile.mkdtemp()))
    ov_sface = openvino_model(folded, 1)
    ort_sface = ort_session(folded, 1)
    cv_sface = cv2.FaceRecognizerSF.create(str(weight_file(SFACE_FILE)), "")
    for batch in (1, 8, 32):
        x = rng.uniform(0, 255, (batch, 3, 128, 128)).astype(np.float32)
        y = rng.uniform(0, 255, (batch, 3, 112, 112)).astype(np.float32)
        chips = [np.ascontiguousarray(c.transpose(1, 2, 0).astype(np.uint8)) for c in y]
        reid_req, sface_req = ov_reid.create_infer_request(), ov_sface.create_infer_request()
        calls = max(2, args.calls * 4 // batch)
        best: dict[str, list[float]] = {k: [] for k in ("ov", "ort", "ov-s", "ort-s", "cv-s")}
        for _ in range(args.rounds):
            best["ov"].append(cpu_ms(lambda: reid_req.infer({0: x}), calls) / batch)
            best["ort"].append(cpu_ms(lambda: ort_reid.run(None, {"input": x}), calls) / batch)
            best["ov-s"].append(cpu_ms(lambda: sface_req.infer({0: y}), calls) / batch)
            best["ort-s"].append(cpu_ms(lambda: ort_sface.run(None, {"data": y}), calls) / batch)
            best["cv-s"].append(cpu_ms(lambda: [cv_sface.feature(c) for c in chips], calls) / batch)
        rows.append(("reid-0095, per face", f"batch {batch}", min(best["ov"]), min(best["ort"]), None))
        rows.append(("SFace, per face", f"batch {batch}", min(best["ov-s"]), min(best["ort-s"]),
                     min(best["cv-s"])))

    core = ov.Core()
    for variant in ("n", "s"):
        path = weight_file(f"yunet/yunet_{variant}_dynamic.onnx")
        ov_det = core.compile_model(core.read_model(str(path)), "CPU",
                                    {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"})
        ort_det = ort_session(path, 1)
        for h, w in ((256, 256), (480, 640), (960, 1280)):
            x = rng.uniform(0, 255, (1, 3, h, w)).astype(np.float32)
            req = ov_det.create_infer_request()
            calls = max(3, args.calls * 256 * 256 // (h * w))
            best_ov, best_ort = [], []
            for _ in range(args.rounds):
                best_ov.append(cpu_ms(lambda: req.infer({0: x}), calls))
                best_ort.append(cpu_ms(lambda: ort_det.run(None, {"input": x}), calls))
            rows.append((f"yunet_{variant}, per image", f"{w}x{h}", min(best_ov), min(best_ort), None))

    load = os.getloadavg()[0]
    print(f"load average {load:.2f}; CPU ms per call, one thread, best of {args.rounds}")
    print("| network | input | OpenVINO ms | ONNX Runtime ms | OpenCV DNN ms | ORT / OpenVINO | OpenCV / OpenVINO |")
    print("|---|---|---|---|---|---|---|")
    for name, inp, a, b, c in rows:
        cv = "" if c is None else f"{c:.2f}"
        ratio = "" if c is None else f"{c / a:.2f}x"
        print(f"| {name} | {inp} | {a:.2f} | {b:.2f} | {cv} | {b / a:.2f}x | {ratio} |")


if __name__ == "__main__":
    main()
