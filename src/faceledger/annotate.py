"""Drawing faces on images, for people who would rather look than read."""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw

from .imaging import DecodedImage, RGBImage, encode_png

GREEN = (40, 200, 80)
RED = (230, 60, 60)
YELLOW = (250, 210, 40)


def draw_faces(img: DecodedImage, faces: list[dict[str, Any]], labels: list[str] | None = None,
               colors: list[tuple[int, int, int]] | None = None) -> RGBImage:
    """The image with each face's BoundingBox, Landmarks and label drawn on it."""
    import numpy as np

    canvas = Image.fromarray(img.pixels.copy())
    draw = ImageDraw.Draw(canvas)
    w, h = img.width, img.height
    line = max(2, round(min(w, h) / 250))
    for i, face in enumerate(faces):
        color = colors[i] if colors else GREEN
        bb = face["BoundingBox"]
        x0, y0 = bb["Left"] * w, bb["Top"] * h
        x1, y1 = x0 + bb["Width"] * w, y0 + bb["Height"] * h
        draw.rectangle((x0, y0, x1, y1), outline=color, width=line)
        for lm in face.get("Landmarks", []):
            cx, cy = lm["X"] * w, lm["Y"] * h
            r = line + 1
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=YELLOW)
        if labels:
            text = labels[i]
            tw = draw.textlength(text)
            draw.rectangle((x0, max(0, y0 - 14), x0 + tw + 6, max(14, y0)), fill=color)
            draw.text((x0 + 3, max(0, y0 - 13)), text, fill=(0, 0, 0))
    return np.asarray(canvas)


def save_png(pixels: RGBImage, path: str) -> None:
    """Write an RGB array as a PNG file."""
    with open(path, "wb") as fh:
        fh.write(encode_png(pixels))
