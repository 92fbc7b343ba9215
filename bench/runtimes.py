"""Which runtime for model 2.0's networks: OpenVINO against ONNX Runtime, side by side.

- face-reidentification-retail-0095: OpenVINO reads Intel's IR files; ONNX Runtime runs our
  own translation of the same files (vision/openvino_ir/, equal to 1e-5). Batches of 1 and 4.
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
    from faceledger.vision.openvino_models import REID_XML, openvino_model
    from faceledger.vision.weights import weight_file

    rng = np.random.default_rng(0)
    rows: list[tuple[str, str, float, float]] = []

    xml = weight_file(REID_XML)
    onnx_path = Path(tempfile.mkdtemp()) / "reid.onnx"
    onnx_path.write_bytes(build_onnx(read_ir(xml)).SerializeToString())
    ov_reid = openvino_model(xml, 1, batch_input="0")
    ort_reid = ort_session(onnx_path, 1)
    for batch in (1, 4):
        x = rng.uniform(0, 255, (batch, 3, 128, 128)).astype(np.float32)
        req = ov_reid.create_infer_request()
        best_ov, best_ort = [], []
        for _ in range(args.rounds):
            best_ov.append(cpu_ms(lambda: req.infer({0: x}), args.calls) / batch)
            best_ort.append(cpu_ms(lambda: ort_reid.run(None, {"input": x}), args.calls) / batch)
        rows.append(("reid-0095, per face", f"batch {batch}", min(best_ov), min(best_ort)))

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
            rows.append((f"yunet_{variant}, per image", f"{w}x{h}", min(best_ov), min(best_ort)))

    print(f"load average {os.getloadavg()[0]:.2f}; CPU ms per call, one thread, best of {args.rounds}")
    print("| network | input | OpenVINO ms | ONNX Runtime ms | ORT / OpenVINO |")
    print("|---|---|---|---|---|")
    for name, inp, a, b in rows:
        print(f"| {name} | {inp} | {a:.2f} | {b:.2f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
