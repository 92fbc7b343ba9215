"""Weight-quantised ONNX files -> plain float32 graphs, folded on first use and cached by the
source file's SHA-256 (as `onnx_graphs.cached_graph` does for dlib's networks).

OpenCV Zoo's SFace ships as a *block-quantised* graph (`..._int8bq.onnx`): every weight is an
int8 initializer with a float32 scale and an int8 zero point per block of 64 values, turned
back into float32 by a `DequantizeLinear` node (opset 21, `block_size`) each time the network
runs; the arithmetic on activations is float32 throughout. OpenCV's DNN module runs that graph
as published (cv2.FaceRecognizerSF); OpenVINO and ONNX Runtime run it faster once the
dequantisation is evaluated once, here, in numpy:

    y = (x - zero_point) * scale        (per block of `block_size` along `axis`)

which is exactly ONNX's definition (the integer difference is exact in float32; one float32
multiplication), so the folded graph computes what the published one computes. Constant
`Reshape`s of folded weights are evaluated too (a reshape moves no value). Nothing else
changes: the same nodes, in the same order, on the same float32 numbers. The input's batch
dimension is made dynamic so faces of many images can go through in one run.

Generated weights live in the model cache directory (data_dir/models by default), never in
the repository; the source file is vendored byte for byte (vision/weights/).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper

from ..imaging import file_sha256
from .onnx_graphs import save_model_atomically

# Bump when the folding changes what it emits, so cached graphs are rebuilt.
FOLD_VERSION = 1


def dequantize(
    q: NDArray[np.integer], scale: NDArray[np.floating], zero_point: NDArray[np.integer] | None,
    axis: int = 1, block_size: int = 0,
) -> NDArray[np.floating]:
    """ONNX DequantizeLinear on constants: per tensor (scalar scale), per axis (1-D scale along
    `axis`) or per block (`block_size` > 0: scale has q's shape with `axis` divided into
    blocks, rounded up)."""
    x = q.astype(np.int32)
    zp = np.zeros(scale.shape, np.int32) if zero_point is None else zero_point.astype(np.int32)
    if zp.shape != scale.shape:
        raise ValueError("DequantizeLinear: zero point and scale differ in shape")
    axis = axis % max(q.ndim, 1)
    if block_size > 0:
        keep = np.arange(q.shape[axis])  # the last block may be shorter
        scale = np.repeat(scale, block_size, axis=axis).take(keep, axis=axis)
        zp = np.repeat(zp, block_size, axis=axis).take(keep, axis=axis)
    elif scale.ndim == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    # the integer difference is exact; then one multiplication in the scale's precision
    return np.asarray((x - zp).astype(scale.dtype) * scale, dtype=scale.dtype)


def fold_dequantized_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` with every DequantizeLinear of initializers (and every Reshape of the
    result by a constant shape) evaluated into a float initializer, unused initializers and
    graph inputs dropped, and the first input's batch dimension dynamic. Returns the model and
    the number of DequantizeLinear nodes folded."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    consts: dict[str, NDArray[np.generic]] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    made: dict[str, NDArray[np.generic]] = {}
    kept: list[onnx.NodeProto] = []
    folded = 0
    for node in g.node:
        if node.op_type == "DequantizeLinear" and all(x in consts for x in node.input if x):
            att = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            zp_name = node.input[2] if len(node.input) > 2 else ""
            value = dequantize(
                consts[node.input[0]], consts[node.input[1]],  # type: ignore[arg-type]
                consts[zp_name] if zp_name else None,  # type: ignore[arg-type]
                int(att.get("axis", 1)), int(att.get("block_size", 0)),
            )  # fmt: skip
            consts[node.output[0]] = made[node.output[0]] = value
            folded += 1
        elif (node.op_type == "Reshape" and node.input[0] in made
              and node.input[1] in consts and len(node.input) == 2):  # fmt: skip
            shape = [int(v) for v in consts[node.input[1]]]
            src = made[node.input[0]]
            # ONNX Reshape: 0 copies the input's dimension (allowzero unset), -1 is inferred
            shape = [src.shape[i] if v == 0 else v for i, v in enumerate(shape)]
            consts[node.output[0]] = made[node.output[0]] = src.reshape(shape)
        else:
            kept.append(node)
    used = {x for n in kept for x in n.input} | {o.name for o in g.output}
    initializers = [numpy_helper.from_array(np.ascontiguousarray(v), k)
                    for k, v in consts.items() if k in used]  # fmt: skip
    names = {i.name for i in initializers}
    inputs = [i for i in g.input if i.name in used and i.name not in names]
    del g.node[:]
    g.node.extend(kept)
    del g.initializer[:]
    g.initializer.extend(initializers)
    del g.input[:]
    g.input.extend(inputs)
    # the exporter's recorded shapes say batch 1 (and name folded weights): runtimes infer them
    del g.value_info[:]
    for value in (*g.input[:1], *g.output) if g.input else ():
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    onnx.checker.check_model(out)
    return out, folded


def cached_folded(src: Path, cache_dir: Path) -> Path:
    """The folded float32 graph of the weight-quantised ONNX file `src` (built and cached on
    first use), keyed by `src`'s SHA-256 and FOLD_VERSION."""
    digest = file_sha256(src)
    target = cache_dir / f"{src.stem}-{digest[:16]}-f{FOLD_VERSION}.onnx"
    if target.is_file():
        return target
    model, _ = fold_dequantized_weights(onnx.load(str(src)))
    save_model_atomically(model, target)
    return target
