"""Read an OpenVINO IR network: the layer list and edges of the .xml, constants from the .bin.

Only what is needed to rebuild the computation: each layer's type, `data` attributes, the
(layer, port) feeding each of its inputs, and for Const layers the array they hold. Constants
stored as f16 and widened by a Convert are widened here (exactly: every f16 is an f32).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

_DTYPES: dict[str, type[np.generic]] = {
    "f16": np.float16,
    "f32": np.float32,
    "i64": np.int64,
    "i32": np.int32,
    "u8": np.uint8,
}


class IrFormatError(ValueError):
    """The file is not an IR network this reader understands (the message says why)."""


@dataclass
class IrLayer:
    id: int
    type: str
    name: str
    data: dict[str, str]
    # inputs[i] = (source layer id, source port) for this layer's input port i, in port order
    inputs: list[tuple[int, int]] = field(default_factory=list)
    value: NDArray[np.generic] | None = None  # Const layers only
    output_shape: tuple[int, ...] = ()  # of the first output port

    def ints(self, key: str) -> list[int]:
        return [int(v) for v in self.data[key].split(",") if v.strip()]


@dataclass
class IrNetwork:
    name: str
    layers: list[IrLayer]  # in topological order
    by_id: dict[int, IrLayer]

    @property
    def parameters(self) -> list[IrLayer]:
        return [la for la in self.layers if la.type == "Parameter"]

    @property
    def results(self) -> list[IrLayer]:
        return [la for la in self.layers if la.type == "Result"]


def _port_shape(port: ET.Element) -> tuple[int, ...]:
    return tuple(int(d.text or 0) for d in port.findall("dim"))


def read_ir(xml_path: Path) -> IrNetwork:
    """The network in `xml_path` (and the .bin beside it)."""
    bin_path = xml_path.with_suffix(".bin")
    try:
        root = ET.parse(xml_path).getroot()
        weights = bin_path.read_bytes()
    except (OSError, ET.ParseError) as exc:
        raise IrFormatError(f"{xml_path.name}: {exc}") from exc
    if root.tag != "net" or root.get("version") not in ("10", "11"):
        raise IrFormatError(f"{xml_path.name} is not an OpenVINO IR v10/v11 network")
    layers: dict[int, IrLayer] = {}
    for el in root.iterfind("layers/layer"):
        data_el = el.find("data")
        out_port = el.find("output/port")
        layer = IrLayer(
            id=int(el.get("id", "-1")),
            type=str(el.get("type")),
            name=str(el.get("name")),
            data=dict(data_el.attrib) if data_el is not None else {},
            output_shape=_port_shape(out_port) if out_port is not None else (),
        )
        if layer.type == "Const":
            dtype = _DTYPES.get(layer.data.get("element_type", ""))
            if dtype is None:
                raise IrFormatError(f"constant {layer.name}: type {layer.data.get('element_type')}")
            offset, size = int(layer.data["offset"]), int(layer.data["size"])
            if offset < 0 or offset + size > len(weights):
                raise IrFormatError(f"constant {layer.name} lies outside {bin_path.name}")
            shape = [int(v) for v in layer.data.get("shape", "").split(",") if v.strip()]
            raw = np.frombuffer(weights, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=offset)
            layer.value = raw.reshape(shape).copy()
        layers[layer.id] = layer
    inputs: dict[int, dict[int, tuple[int, int]]] = {}
    for e in root.iterfind("edges/edge"):
        src, sport = int(e.get("from-layer", "-1")), int(e.get("from-port", "-1"))
        dst, dport = int(e.get("to-layer", "-1")), int(e.get("to-port", "-1"))
        if src not in layers or dst not in layers:
            raise IrFormatError(f"{xml_path.name}: an edge names an unknown layer")
        inputs.setdefault(dst, {})[dport] = (src, sport)
    for lid, ports in inputs.items():
        layers[lid].inputs = [ports[p] for p in sorted(ports)]
    return IrNetwork(str(root.get("name")), _topological(layers), layers)


def _topological(layers: dict[int, IrLayer]) -> list[IrLayer]:
    order: list[IrLayer] = []
    state: dict[int, int] = {}  # 1 visiting, 2 done
    for start in sorted(layers):
        stack: list[tuple[int, bool]] = [(start, False)]
        while stack:
            lid, expanded = stack.pop()
            if expanded:
                state[lid] = 2
                order.append(layers[lid])
                continue
            if state.get(lid) == 2:
                continue
            if state.get(lid) == 1:
                raise IrFormatError("the network has a cycle")
            state[lid] = 1
            stack.append((lid, True))
            for src, _ in reversed(layers[lid].inputs):
                if state.get(src) != 2:
                    stack.append((src, False))
    return order
