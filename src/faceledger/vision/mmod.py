"""dlib's MMOD detection around the network: the tiled image pyramid the network sees
(input_rgb_image_pyramid<pyramid_down<6>>), the mapping from output cells back to image
rectangles, and loss_mmod's non-max suppression. Pure numpy, transcribed from dlib's
dlib/dnn/input.h, dlib/image_transforms/image_pyramid.h and dlib/dnn/loss.h so that the
detections equal dlib.cnn_face_detection_model_v1's.

Rectangles here are dlib's: inclusive integer corners (left, top, right, bottom).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .dlibnet import Conv, DlibNetwork, MmodOptions

Rect = tuple[int, int, int, int]
DRect = tuple[float, float, float, float]

PYRAMID_N = 6  # pyramid_down<6>: each level is 5/6 of the one above
_MIN_LEVEL_HEIGHT = 5


def _level_size(nr: int, nc: int) -> tuple[int, int]:
    rate = (PYRAMID_N - 1.0) / PYRAMID_N
    return math.floor(rate * nr), math.floor(rate * nc)


def tiled_pyramid_layout(nr: int, nc: int, padding: int, outer_padding: int) -> tuple[list[Rect], int, int]:
    """impl::compute_tiled_image_pyramid_details: where each pyramid level sits in one big
    image, and that image's (rows, cols)."""
    if nr * nc == 0:
        return [], 0, 0
    sizes = [(nr, nc)]
    while True:
        nr, nc = _level_size(nr, nc)
        if nr * nc == 0 or nr < _MIN_LEVEL_HEIGHT:
            break
        sizes.append((nr, nc))
    heights = [h for h, _ in sizes]
    widths = [w for _, w in sizes]
    total_height = sum(h + padding for h in heights) - padding * 2
    height, prev_width = 0, 0
    for h, w in sizes:
        if w <= widths[0] - prev_width - padding and (height - heights[0]) * 2 >= total_height - heights[0]:
            break
        height += h + padding
        prev_width = w
    height -= padding
    width = widths[0]
    rects: list[Rect] = []
    y, i = outer_padding, 0
    while y < height + outer_padding and i < len(sizes):
        h, w = sizes[i]
        rects.append((outer_padding, y, outer_padding + w - 1, y + h - 1))
        y += h + padding
        i += 1
    y -= padding
    first = rects[0]
    while i < len(sizes):
        h, w = sizes[i]
        # rectangle(p1, p1 - br_corner) with br_corner = (w-1, h-1): the box ending at p1
        x1, y1 = outer_padding + width - 1, y - 1
        rect = (x1 - (w - 1), y1 - (h - 1), x1, y1)
        if _intersects(first, rect):
            break
        rects.append(rect)
        y -= h + padding
        i += 1
    return rects, height + outer_padding * 2, width + outer_padding * 2


def _intersects(a: Rect, b: Rect) -> bool:
    return max(a[0], b[0]) <= min(a[2], b[2]) and max(a[1], b[1]) <= min(a[3], b[3])


def resize_bilinear(src: NDArray[np.float32], rows: int, cols: int) -> NDArray[np.float32]:
    """dlib's resize_image with bilinear interpolation (corners aligned), per channel."""
    _, sr, sc = src.shape
    y_scale = (sr - 1) / max(rows - 1, 1)
    x_scale = (sc - 1) / max(cols - 1, 1)
    y = np.arange(rows, dtype=np.float64) * y_scale
    x = np.arange(cols, dtype=np.float64) * x_scale
    top = np.floor(y).astype(np.int64)
    left = np.floor(x).astype(np.int64)
    bottom = np.minimum(top + 1, sr - 1)
    right = np.minimum(left + 1, sc - 1)
    fy = (y - top).astype(np.float32)[None, :, None]
    fx = (x - left).astype(np.float32)[None, None, :]
    tl = src[:, top][:, :, left]
    tr = src[:, top][:, :, right]
    bl = src[:, bottom][:, :, left]
    br = src[:, bottom][:, :, right]
    out: NDArray[np.float32] = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    return out.astype(np.float32)


def pyramid_tensor(
    pixels: NDArray[np.uint8], mean_rgb: tuple[float, float, float], padding: int, outer_padding: int
) -> tuple[NDArray[np.float32], list[Rect]]:
    """input_rgb_image_pyramid::to_tensor: the (1, 3, NR, NC) tensor and the level rectangles."""
    h, w = pixels.shape[:2]
    rects, nr, nc = tiled_pyramid_layout(h, w, padding, outer_padding)
    data = np.zeros((3, nr, nc), dtype=np.float32)
    if not rects:
        return data[None], rects
    mean = np.array(mean_rgb, dtype=np.float32).reshape(3, 1, 1)
    l0, t0, r0, b0 = rects[0]
    data[:, t0 : b0 + 1, l0 : r0 + 1] = (pixels.transpose(2, 0, 1).astype(np.float32) - mean) / np.float32(256.0)
    for prev, cur in zip(rects, rects[1:]):
        src = data[:, prev[1] : prev[3] + 1, prev[0] : prev[2] + 1]
        data[:, cur[1] : cur[3] + 1, cur[0] : cur[2] + 1] = resize_bilinear(
            src, cur[3] - cur[1] + 1, cur[2] - cur[0] + 1
        )
    return data[None], rects


def output_to_input_map(net: DlibNetwork) -> tuple[int, int]:
    """(scale, offset) such that output cell p maps to input-tensor point scale*p + offset,
    composing each conv layer's map_output_to_input (p*stride - padding + size/2) from the
    top of the network down; the other layers map points to themselves."""
    scale, offset = 1, 0
    for node in reversed(net.nodes):
        layer = node.layer
        if isinstance(layer, Conv):
            size = layer.weights.shape[2]
            stride, pad = layer.stride[0], layer.padding[0]
            # p_in = p_out*stride - pad + size//2, applied to p_out = scale*p + offset
            scale, offset = scale * stride, offset * stride - pad + size // 2
    return scale, offset


def _nearest_rect(rects: list[Rect], x: float, y: float) -> int:
    px, py = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
    best, best_d = 0, math.inf
    for i, (left, top, right, bottom) in enumerate(rects):
        if left <= px <= right and top <= py <= bottom:
            return i
        nx, ny = min(max(px, left), right), min(max(py, top), bottom)
        d = math.hypot(nx - px, ny - py)
        if d < best_d:
            best, best_d = i, d
    return best


def _point_up(x: float, y: float, levels: int) -> tuple[float, float]:
    ratio = PYRAMID_N / (PYRAMID_N - 1.0)
    for _ in range(levels):
        x, y = x * ratio + 0.3, y * ratio + 0.3
    return x, y


def tensor_rect_to_image(rects: list[Rect], r: DRect) -> DRect:
    """tiled_pyramid_to_image: a rectangle in the tiled tensor -> the original image."""
    level = _nearest_rect(rects, (r[0] + r[2]) / 2.0, (r[1] + r[3]) / 2.0)
    ox, oy = rects[level][0], rects[level][1]
    x0, y0 = _point_up(r[0] - ox, r[1] - oy, level)
    x1, y1 = _point_up(r[2] - ox, r[3] - oy, level)
    return x0, y0, x1, y1


def _round_rect(r: DRect) -> Rect:
    left, top, right, bottom = (int(math.floor(v + 0.5)) for v in r)
    return left, top, right, bottom


def _area(r: Rect) -> int:
    return max(0, r[2] - r[0] + 1) * max(0, r[3] - r[1] + 1)


def overlaps(a: Rect, b: Rect, iou: float, covered: float) -> bool:
    """test_box_overlap: intersection over the *bounding* rectangle of both above `iou`, or
    more than `covered` of either box inside the other."""
    inner = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    if inner == 0:
        return False
    outer = _area((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
    return inner / outer > iou or inner / _area(a) > covered or inner / _area(b) > covered


@dataclass(frozen=True)
class MmodDetection:
    rect: Rect  # dlib's inclusive rectangle in image pixels
    confidence: float


def decode_detections(
    scores: NDArray[np.float32],
    rects: list[Rect],
    options: MmodOptions,
    mapping: tuple[int, int],
    threshold: float = 0.0,
) -> list[MmodDetection]:
    """loss_mmod_::to_label: cells scoring above `threshold` -> windows -> image rectangles,
    strongest first, dropping any that overlaps a kept one (non-max suppression)."""
    scale, offset = mapping
    rows, cols = np.nonzero(scores > threshold)
    candidates: list[tuple[float, Rect]] = []
    half_w = (options.detector_width - 1) / 2.0
    half_h = (options.detector_height - 1) / 2.0
    for r, c in zip(rows.tolist(), cols.tolist()):
        px, py = float(scale * c + offset), float(scale * r + offset)
        window = (px - half_w, py - half_h, px + half_w, py + half_h)  # centered_drect
        candidates.append((float(scores[r, c]), _round_rect(tensor_rect_to_image(rects, window))))
    candidates.sort(key=lambda t: t[0], reverse=True)
    kept: list[MmodDetection] = []
    for score, rect in candidates:
        if any(overlaps(k.rect, rect, options.nms_iou, options.nms_covered) for k in kept):
            continue
        kept.append(MmodDetection(rect, score))
    return kept
