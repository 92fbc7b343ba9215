"""An IrNetwork -> an ONNX model (opset 17), float32 throughout.

Layer types: Parameter, Const, Convert, Convolution, GroupConvolution, Add, Multiply, PReLU,
Sigmoid, AvgPool (explicit padding), Result — what Intel's face-reidentification-retail-0095
uses. Anything else raises, naming the layer, rather than computing something else.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
import onnx
from onnx import TensorProto, helper, numpy_helper

from .reader import IrFormatError, IrLayer, IrNetwork

OPSET = 17


def _pads(layer: IrLayer) -> list[int]:
    if layer.data.get("auto_pad", "explicit") not in ("explicit", "notset"):
        raise IrFormatError(f"{layer.name}: auto_pad={layer.data['auto_pad']} is not supported")
    return layer.ints("pads_begin") + layer.ints("pads_end")


def build_onnx(net: IrNetwork) -> onnx.ModelProto:
    """The ONNX model computing `net`, with input "input" (batch dynamic) and output "output"."""
    if len(net.parameters) != 1 or len(net.results) != 1:
        raise IrFormatError("only networks with one input and one output are supported")
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    names: dict[int, str] = {}
    consts: dict[int, NDArray[np.generic]] = {}

    def source(layer: IrLayer, i: int) -> str:
        lid = layer.inputs[i][0]
        if lid in consts and lid not in names:
            names[lid] = f"const_{lid}"
            inits.append(numpy_helper.from_array(np.ascontiguousarray(consts[lid]), names[lid]))
        return names[lid]

    def emit(layer: IrLayer, op: str, inputs: list[str], **attrs: Any) -> None:
        out = f"l{layer.id}"
        nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{layer.id}", **attrs))
        names[layer.id] = out

    for layer in net.layers:
        t = layer.type
        if t == "Parameter":
            names[layer.id] = "input"
        elif t == "Const":
            assert layer.value is not None
            consts[layer.id] = layer.value
        elif t == "Convert":
            src = layer.inputs[0][0]
            if src not in consts:
                raise IrFormatError(f"{layer.name}: Convert of a computed tensor is not supported")
            if layer.data.get("destination_type") != "f32":
                raise IrFormatError(f"{layer.name}: Convert to {layer.data.get('destination_type')}")
            consts[layer.id] = consts[src].astype(np.float32)
        elif t in ("Convolution", "GroupConvolution"):
            w_id = layer.inputs[1][0]
            if w_id not in consts:
                raise IrFormatError(f"{layer.name}: computed weights are not supported")
            w = consts[w_id]
            group = 1
            if t == "GroupConvolution":  # [G, O/G, I/G, kh, kw] -> [O, I/G, kh, kw]
                group = int(w.shape[0])
                w = w.reshape(w.shape[0] * w.shape[1], *w.shape[2:])
            wname = f"w_{layer.id}"
            inits.append(numpy_helper.from_array(np.ascontiguousarray(w, dtype=np.float32), wname))
            emit(
                layer, "Conv", [source(layer, 0), wname],
                kernel_shape=list(w.shape[2:]), strides=layer.ints("strides"),
                dilations=layer.ints("dilations"), pads=_pads(layer), group=group,
            )  # fmt: skip
        elif t in ("Add", "Multiply"):
            if layer.data.get("auto_broadcast", "numpy") != "numpy":
                raise IrFormatError(f"{layer.name}: broadcast {layer.data['auto_broadcast']}")
            emit(layer, "Add" if t == "Add" else "Mul", [source(layer, 0), source(layer, 1)])
        elif t == "PReLU":
            s_id = layer.inputs[1][0]
            slope = consts[s_id]
            if slope.ndim == 1 and len(layer.output_shape) == 4:  # per channel: broadcast on C
                slope = slope.reshape(-1, 1, 1)
            sname = f"slope_{layer.id}"
            inits.append(numpy_helper.from_array(np.ascontiguousarray(slope, dtype=np.float32), sname))
            emit(layer, "PRelu", [source(layer, 0), sname])
        elif t == "Sigmoid":
            emit(layer, "Sigmoid", [source(layer, 0)])
        elif t == "AvgPool":
            emit(
                layer, "AveragePool", [source(layer, 0)],
                kernel_shape=layer.ints("kernel"), strides=layer.ints("strides"), pads=_pads(layer),
                count_include_pad=0 if layer.data.get("exclude-pad", "false") == "true" else 1,
                ceil_mode=1 if layer.data.get("rounding_type", "floor") == "ceil" else 0,
            )  # fmt: skip
        elif t == "Result":
            nodes.append(helper.make_node("Identity", [source(layer, 0)], ["output"], name="output"))
        else:
            raise IrFormatError(f"no ONNX translation for {t} layer {layer.name}")

    param, result = net.parameters[0], net.results[0]
    in_shape: list[int | str] = ["batch", *param.output_shape[1:]]
    out_dims = net.by_id[result.inputs[0][0]].output_shape
    out_shape: list[int | str] = ["batch", *out_dims[1:]]
    graph = helper.make_graph(
        nodes,
        net.name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="faceledger")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
