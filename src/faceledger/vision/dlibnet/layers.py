"""Readers for the layer, input and loss details dlib writes (dlib/dnn/layers.h, input.h, loss.h).

Each reader checks the version string it knows; anything else fails with a clear error rather
than being guessed at.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .stream import DlibStream


@dataclass(frozen=True)
class Conv:
    """con_: filters (out, in, nr, nc) and biases (out,); dlib pads symmetrically."""

    weights: NDArray[np.float32]
    bias: NDArray[np.float32]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class Affine:
    """affine_ (or bn_ folded for inference): y = gamma * x + beta per channel."""

    gamma: NDArray[np.float32]
    beta: NDArray[np.float32]


@dataclass(frozen=True)
class Relu:
    pass


@dataclass(frozen=True)
class Pool:
    """max_pool_/avg_pool_; a window of 0 means the whole input (…_everything)."""

    kind: str  # "max" or "avg"
    window: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class AddPrev:
    """add_prev_: sum with a tagged layer's output; the smaller input is zero-padded."""


@dataclass(frozen=True)
class FullyConnected:
    """fc_: weights stored (inputs, outputs); no bias for fc_no_bias."""

    weights: NDArray[np.float32]
    bias: NDArray[np.float32] | None


Layer = Conv | Affine | Relu | Pool | AddPrev | FullyConnected


@dataclass(frozen=True)
class RgbInput:
    """input_rgb_image_sized / input_rgb_image_pyramid: (pixel - mean) / 256 per channel."""

    mean_rgb: tuple[float, float, float]
    size: tuple[int, int] | None  # (rows, cols) for the sized input
    pyramid: bool
    pyramid_padding: int = 10
    pyramid_outer_padding: int = 11


@dataclass(frozen=True)
class MetricLoss:
    margin: float
    distance_threshold: float


@dataclass(frozen=True)
class MmodOptions:
    """loss_mmod_'s options: the sliding window and the non-max suppression rule."""

    detector_width: int
    detector_height: int
    nms_iou: float
    nms_covered: float


Loss = MetricLoss | MmodOptions


def _multipliers(s: DlibStream, n: int = 4) -> None:
    for _ in range(n):
        s.real()  # learning-rate / weight-decay multipliers: training only


def _split(params: NDArray[np.float32], *shapes: tuple[int, int, int, int]) -> list[NDArray[np.float32]]:
    flat = params.reshape(-1)
    out, offset = [], 0
    for shape in shapes:
        n = math.prod(shape)
        if offset + n > flat.size:
            raise ValueError(f"parameter tensor of {flat.size} values is too small for {shapes}")
        out.append(flat[offset : offset + n].reshape(shape).copy())
        offset += n
    return out


def _con(s: DlibStream, version: str) -> Conv:
    params = s.tensor()
    _num_filters, _nr, _nc = s.integer(), s.integer(), s.integer()
    stride = (s.integer(), s.integer())
    padding = (s.integer(), s.integer())
    fshape, bshape = s.alias_tensor(), s.alias_tensor()
    _multipliers(s)
    weights, bias = _split(params, fshape, bshape)
    return Conv(weights, bias.reshape(-1), stride, padding)


def _affine(s: DlibStream, version: str) -> Affine:
    params = s.tensor()
    gshape, bshape = s.alias_tensor(), s.alias_tensor()
    mode = s.integer()
    if mode not in (0, 1):
        raise s.fail(f"affine_ mode {mode}")
    gamma, beta = _split(params, gshape, bshape)
    return Affine(gamma.reshape(-1), beta.reshape(-1))


def _bn(s: DlibStream, version: str) -> Affine:
    params = s.tensor()
    gshape, bshape = s.alias_tensor(), s.alias_tensor()
    for _ in range(2):
        s.tensor()  # means, invstds of the last training batch
    running_means, running_variances = s.tensor(), s.tensor()
    s.integer()  # num_updates
    s.integer()  # running_stats_window_size
    _multipliers(s)
    eps = s.real()
    gamma, beta = (a.reshape(-1) for a in _split(params, gshape, bshape))
    # Inference-time batch norm is an affine map: dlib does the same fold when it loads a
    # bn_ layer into an affine_ one.
    scale = gamma / np.sqrt(running_variances.reshape(-1) + np.float32(eps))
    shift = beta - scale * running_means.reshape(-1)
    return Affine(scale.astype(np.float32), shift.astype(np.float32))


def _relu(s: DlibStream, version: str) -> Relu:
    return Relu()


def _pool(kind: str) -> Callable[[DlibStream, str], Pool]:
    def read(s: DlibStream, version: str) -> Pool:
        window = (s.integer(), s.integer())
        stride = (s.integer(), s.integer())
        padding = (s.integer(), s.integer())
        return Pool(kind, window, stride, padding)

    return read


def _add_prev(s: DlibStream, version: str) -> AddPrev:
    return AddPrev()


def _fc(s: DlibStream, version: str) -> FullyConnected:
    _num_outputs, _num_inputs = s.integer(), s.integer()
    params = s.tensor()
    wshape, bshape = s.alias_tensor(), s.alias_tensor()
    bias_mode = s.integer()
    _multipliers(s)
    if bias_mode == 0:  # FC_HAS_BIAS
        weights, bias = _split(params, wshape, bshape)
        return FullyConnected(weights.reshape(wshape[0], -1), bias.reshape(-1))
    (weights,) = _split(params, wshape)
    return FullyConnected(weights.reshape(wshape[0], -1), None)


LAYER_READERS: dict[str, tuple[str, Callable[[DlibStream, str], Layer]]] = {
    # version string -> (layer kind as written in dlib's network definitions, reader)
    "con_4": ("con", _con),
    "con_5": ("con", _con),
    "affine_": ("affine", _affine),
    "bn_con2": ("affine", _bn),
    "relu_": ("relu", _relu),
    "max_pool_2": ("max_pool", _pool("max")),
    "avg_pool_2": ("avg_pool", _pool("avg")),
    "add_prev_": ("add_prev", _add_prev),
    "fc_2": ("fc", _fc),
}


def read_layer(s: DlibStream) -> tuple[str, Layer]:
    """One layer's details: (kind, parsed layer)."""
    version = s.string()
    entry = LAYER_READERS.get(version)
    if entry is None:
        raise s.fail(
            f"layer version {version!r} is not supported (known: {', '.join(sorted(LAYER_READERS))})"
        )
    kind, reader = entry
    return kind, reader(s, version)


def read_input(s: DlibStream) -> RgbInput:
    version = s.string()
    if version == "input_rgb_image_sized":
        mean = (s.real(), s.real(), s.real())
        rows, cols = s.integer(), s.integer()
        return RgbInput(mean, (rows, cols), pyramid=False)
    if version in ("input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
        mean = (s.real(), s.real(), s.real())
        if version == "input_rgb_image_pyramid2":
            return RgbInput(mean, None, True, s.integer(), s.integer())
        return RgbInput(mean, None, pyramid=True)
    raise s.fail(f"input layer version {version!r} is not supported")


def read_loss(s: DlibStream) -> Loss:
    version = s.string()
    if version == "loss_metric_2":
        return MetricLoss(s.real(), s.real())
    if version == "loss_mmod_":
        s.version({1}, "mmod_options")
        width, height = s.integer(), s.integer()
        s.real()  # loss_per_false_alarm
        s.real()  # loss_per_missed_target
        s.real()  # truth_match_iou_threshold
        nms_iou, nms_covered = s.real(), s.real()  # overlaps_nms (test_box_overlap)
        s.real(), s.real()  # overlaps_ignore
        return MmodOptions(width, height, nms_iou, nms_covered)
    raise s.fail(f"loss layer version {version!r} is not supported")
