"""Read a dlib DNN file (add_loss_layer / add_layer / add_tag_layer / add_skip_layer, core.h).

The file is written recursively from the loss layer down: every wrapper writes its version
before its subnetwork, and a layer's details after it. So the file holds the loss details,
then all the version headers top-down, then the input layer, then each layer's details
bottom-up, each followed by training state (flags and cached tensors) that inference ignores.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .layers import Layer, Loss, RgbInput, read_input, read_layer, read_loss
from .stream import DlibFormatError, DlibStream


@dataclass(frozen=True)
class Node:
    """One entry of the stack, bottom-up: a layer, or a tag/skip with its number."""

    kind: str  # layer kind, or "tag" / "skip"
    layer: Layer | None = None
    tag: int = 0  # tag number for tag/skip/add_prev


@dataclass(frozen=True)
class DlibNetwork:
    """A parsed dlib network: input, the stack bottom-up, loss; and the file's SHA-256."""

    input: RgbInput
    nodes: list[Node]
    loss: Loss
    sha256: str


def _tag_number(entry: str, prefix: str) -> int:
    return int(entry[len(prefix) :])


def read_network(path: Path, topology: list[str]) -> DlibNetwork:
    """Parse `path` against `topology` (top-down, from dlibnet.topology)."""
    data = path.read_bytes()
    s = DlibStream(data, path.name)
    s.version({1}, "add_loss_layer")
    loss = read_loss(s)
    computational = [e for e in topology if not e.startswith(("tag", "skip"))]
    for i, entry in enumerate(topology):
        if entry.startswith(("tag", "skip")):
            s.version({1}, f"add_{entry[:3]}_layer")
        elif i == len(topology) - 1:
            s.version({2, 3}, "input add_layer")
        else:
            s.version({1, 2}, "add_layer")
    if not computational:
        raise DlibFormatError("empty network definition")
    inp = read_input(s)
    nodes: list[Node] = []
    for depth, entry in enumerate(reversed(topology)):
        if entry.startswith("tag"):
            nodes.append(Node("tag", tag=_tag_number(entry, "tag")))
            continue
        if entry.startswith("skip"):
            nodes.append(Node("skip", tag=_tag_number(entry, "skip")))
            continue
        kind, layer = read_layer(s)
        expected = "add_prev" if entry.startswith("add_prev") else entry
        if kind != expected:
            raise s.fail(f"layer {depth} from the input is {kind}, the network definition says {expected}")
        tag = _tag_number(entry, "add_prev") if entry.startswith("add_prev") else 0
        nodes.append(Node(kind, layer, tag))
        # training state: this_layer_setup_called, gradient_input_is_stale,
        # get_output_and_gradient_input_disabled, then x_grad, cached_output and
        # params_grad (grad_final and _sample_expansion_factor for the input-side layer)
        for _ in range(3):
            s.boolean()
        for _ in range(3):
            s.tensor()
        if depth == 0:
            s.integer()
    if not s.at_end:
        raise s.fail("trailing bytes after the network: the file does not match the definition")
    return DlibNetwork(inp, nodes, loss, hashlib.sha256(data).hexdigest())
