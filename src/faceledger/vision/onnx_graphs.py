"""dlib networks -> ONNX graphs, built on first use and cached by the source file's SHA-256.

For a fixed-size input (input_rgb_image_sized) the graph takes float32 RGB pixels
(N, 3, H, W) in 0-255 and applies dlib's input normalisation itself, (pixel - mean) / 256.
For an image pyramid input the caller builds the normalised tiled pyramid (vision/mmod.py:
its padding is zero *after* normalisation) and the graph starts at the first layer.
Generated weights live in the data directory (`models/`), never in the repository.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from ..imaging import file_sha256
from ..permissions import private_dir
from .dlibnet import (
    AddPrev,
    Affine,
    Conv,
    DlibNetwork,
    FullyConnected,
    Pool,
    Relu,
    read_network,
)

# Bump when the builder changes what it emits, so cached graphs are rebuilt.
BUILDER_VERSION = 2
OPSET = 17

Shape = tuple[int | None, int | None, int | None]  # (channels, rows, cols); None = dynamic


def _out_size(size: int | None, window: int, stride: int, pad: int) -> int | None:
    return None if size is None else 1 + (size + 2 * pad - window) // stride


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, value: NDArray[np.generic]) -> str:
        n = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), n))
        return n

    def op(self, op_type: str, inputs: list[str], stem: str, **attrs: Any) -> str:
        out = self.name(stem)
        self.nodes.append(helper.make_node(op_type, inputs, [out], out, None, None, **attrs))
        return out

    def pad_to(self, x: str, have: Shape, want: Shape) -> str:
        """Zero-pad at the end of each axis, as dlib's add_prev does for the smaller input."""
        extra = [0 if h == w else int(w or 0) - int(h or 0) for h, w in zip(have, want)]
        if not any(extra):
            return x
        pads = np.array([0, 0, 0, 0, 0, *extra], dtype=np.int64)
        return self.op("Pad", [x, self.const("pads", pads)], "pad")


def build_graph(net: DlibNetwork, name: str, dynamic_size: bool) -> onnx.ModelProto:
    """The ONNX model computing `net`'s output tensor (the loss layer's input)."""
    b = _Builder()
    rows, cols = (None, None) if dynamic_size or net.input.size is None else net.input.size
    x = "pixels"
    if not net.input.pyramid:
        mean = np.array(net.input.mean_rgb, dtype=np.float32).reshape(1, 3, 1, 1)
        x = b.op("Sub", [x, b.const("mean", mean)], "centred")
        x = b.op("Mul", [x, b.const("scale", np.array(1.0 / 256.0, dtype=np.float32))], "input")
    shape: Shape = (3, rows, cols)
    tags: dict[int, tuple[str, Shape]] = {}
    for node in net.nodes:
        layer = node.layer
        if node.kind == "tag":
            tags[node.tag] = (x, shape)
        elif node.kind == "skip":
            x, shape = tags[node.tag]
        elif isinstance(layer, Conv):
            k = layer.weights.shape
            x = b.op(
                "Conv",
                [x, b.const("W", layer.weights), b.const("B", layer.bias)],
                "conv",
                kernel_shape=[k[2], k[3]],
                strides=list(layer.stride),
                pads=[layer.padding[0], layer.padding[1], layer.padding[0], layer.padding[1]],
            )
            shape = (
                k[0],
                _out_size(shape[1], k[2], layer.stride[0], layer.padding[0]),
                _out_size(shape[2], k[3], layer.stride[1], layer.padding[1]),
            )
        elif isinstance(layer, Affine):
            c = layer.gamma.size
            x = b.op("Mul", [x, b.const("gamma", layer.gamma.reshape(1, c, 1, 1))], "affine")
            x = b.op("Add", [x, b.const("beta", layer.beta.reshape(1, c, 1, 1))], "affine")
        elif isinstance(layer, Relu):
            x = b.op("Relu", [x], "relu")
        elif isinstance(layer, Pool):
            if layer.window == (0, 0):
                x = b.op("GlobalAveragePool" if layer.kind == "avg" else "GlobalMaxPool", [x], "gpool")
                shape = (shape[0], 1, 1)
            else:
                if layer.kind == "avg" and layer.padding != (0, 0):
                    raise ValueError("avg_pool with padding is not supported by this builder")
                x = b.op(
                    "AveragePool" if layer.kind == "avg" else "MaxPool",
                    [x],
                    "pool",
                    kernel_shape=list(layer.window),
                    strides=list(layer.stride),
                    pads=[layer.padding[0], layer.padding[1], layer.padding[0], layer.padding[1]],
                )
                shape = (
                    shape[0],
                    _out_size(shape[1], layer.window[0], layer.stride[0], layer.padding[0]),
                    _out_size(shape[2], layer.window[1], layer.stride[1], layer.padding[1]),
                )
        elif isinstance(layer, AddPrev):
            other, oshape = tags[node.tag]
            if None in shape or None in oshape:
                if shape != oshape:
                    raise ValueError("add_prev of dynamic shapes that may differ is not supported")
                want = shape
            else:
                want = (
                    max(int(shape[0] or 0), int(oshape[0] or 0)),
                    max(int(shape[1] or 0), int(oshape[1] or 0)),
                    max(int(shape[2] or 0), int(oshape[2] or 0)),
                )
            x = b.op("Add", [b.pad_to(x, shape, want), b.pad_to(other, oshape, want)], "add")
            shape = want
        elif isinstance(layer, FullyConnected):
            x = b.op("Flatten", [x], "flat", axis=1)
            x = b.op("MatMul", [x, b.const("fcW", layer.weights)], "fc")
            if layer.bias is not None:
                x = b.op("Add", [x, b.const("fcB", layer.bias)], "fc")
            shape = (layer.weights.shape[1], None, None)
        else:
            raise ValueError(f"no ONNX translation for layer {node.kind}")
    b.nodes.append(helper.make_node("Identity", [x], ["output"], name="output"))
    flat = isinstance(net.nodes[-1].layer, FullyConnected)
    out_shape: list[int | str] = (
        ["batch", int(shape[0] or 0)] if flat else ["batch", int(shape[0] or 0), "out_rows", "out_cols"]
    )
    in_shape: list[int | str] = ["batch", 3, "rows" if rows is None else rows, "cols" if cols is None else cols]
    graph = helper.make_graph(
        b.nodes,
        name,
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        b.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="faceledger"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def cached_graph(
    dat: Path, topology: list[str], cache_dir: Path, *, dynamic_size: bool = False
) -> tuple[Path, DlibNetwork | None]:
    """The ONNX file for `dat` (built and cached on first use), and the parsed network if it
    had to be read now. Keyed by the .dat's SHA-256 and the builder version."""
    digest = file_sha256(dat)
    target = cache_dir / f"{dat.stem}-{digest[:16]}-b{BUILDER_VERSION}.onnx"
    if target.is_file():
        return target, None
    net = read_network(dat, topology)
    save_model_atomically(build_graph(net, dat.stem, dynamic_size), target)
    return target, net


def save_model_atomically(model: onnx.ModelProto, target: Path) -> None:
    """Write `model` to `target` in an owner-only cache directory: a temporary file, then a
    rename, so a concurrent reader never sees half a model."""
    cache_dir = target.parent
    private_dir(cache_dir, tighten=True)  # under the data directory by default: owner-only
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tmp-", suffix=".onnx")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
