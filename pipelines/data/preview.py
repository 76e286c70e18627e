"""Contact sheets: what the model will see, as one PNG a person can read.

:func:`render_contact_sheet` draws a batch of any recipe (:mod:`pipelines.data.recipes`) as a
grid: rows are samples, or the streams/blocks/views of a sample (each recipe's
``preview_rows`` says which); columns are frames (at most ``max_cols``, evenly
subsampled); the left panel names the video, its label, the stream and the augmentation
parameters; under each frame its source frame index and, where a recipe has them, the
frame's labels. Flow is drawn with the usual colour wheel (hue =
direction, brightness = magnitude, normalised per clip; the caption gives the maximum).
Training jobs log the image to MLflow; ``jobs/preview.py`` writes it to a file.

Shape legend: ``T`` frames, ``H``/``W`` frame size, ``K`` classes.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipelines.prep import flow as flow_mod


@dataclasses.dataclass(frozen=True)
class Layout:
    """Geometry of a sheet: a left caption panel, then ``cols`` tiles per row."""

    tile: int = 96
    left: int = 300
    header: int = 24
    caption: int = 14   # text line under each tile
    pad: int = 4
    font_size: int = 11

    def size(self, rows: int, cols: int) -> tuple[int, int]:
        """(width, height) of a sheet with ``rows`` x ``cols`` tiles."""
        return (self.left + cols * (self.tile + self.pad) + self.pad,
                self.header + rows * (self.tile + self.caption + self.pad) + self.pad)


def flow_to_rgb(flow_THW3: np.ndarray) -> tuple[np.ndarray, float]:
    """Stored uint8 flow -> colour-wheel RGB (hue = direction, value = magnitude / clip max).

    Returns:
        (rgb_THW3 uint8, the clip's largest magnitude in px).
    """
    f_THW2 = flow_mod.decode_flow(flow_THW3)
    mag, ang = cv2.cartToPolar(f_THW2[..., 0].reshape(-1), f_THW2[..., 1].reshape(-1), angleInDegrees=True)
    mag, ang = mag.reshape(f_THW2.shape[:3]), ang.reshape(f_THW2.shape[:3])
    top = max(float(np.percentile(mag, 99)), 0.5)  # at least 0.5 px so quantisation noise stays dark
    hsv = np.stack([ang / 2, np.full_like(mag, 255), np.clip(mag / top * 255, 0, 255)], -1).astype(np.uint8)
    rgb = cv2.cvtColor(hsv.reshape(-1, hsv.shape[2], 3), cv2.COLOR_HSV2RGB).reshape(hsv.shape)
    return rgb, float(mag.max())


def _label(batch: dict, i: int) -> str:
    name = str(batch["label"][i]) if "label" in batch else ""
    index = int(batch["label_index"][i]) if "label_index" in batch else -1
    return f"{name} ({index})" if index >= 0 else "no video label"


def _rows(batch: dict, cfg, max_samples: int, max_cols: int, max_views: int) -> list:
    """The sheet's rows: the recipe's ``preview_rows`` of each of the first ``max_samples`` samples."""
    rows = []
    for i in range(min(len(batch["video_id"]), max_samples)):
        head = f"#{i} {batch['video_id'][i]}  {_label(batch, i)}"
        rows += cfg.preview_rows(batch, i, head, max_cols, max_views)
    return rows


def render_contact_sheet(batch: dict[str, np.ndarray], recipe, *, max_samples: int = 4,
                         max_cols: int = 8, max_views: int = 6, layout: Layout = Layout()) -> Image.Image:
    """Draw a numpy batch of ``recipe`` as a contact sheet (module docstring).

    Args:
        batch: columns of :func:`pipelines.data.recipes.batch_schema` (string columns optional).
        recipe: the recipe the batch was built with (its name suffices for the presets).

    Returns:
        An RGB image of ``layout.size(rows, cols)``.
    """
    from pipelines.data.recipes import recipe as get_recipe

    cfg = get_recipe(recipe)
    rows = _rows(batch, cfg, max_samples, max_cols, max_views)
    cols = max((len(r.frames_THW3) for r in rows), default=1)
    font = ImageFont.load_default(size=layout.font_size)
    sheet = Image.new("RGB", layout.size(len(rows), cols), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((layout.pad, 5), f"recipe {cfg.name}: {len(rows)} rows, columns = frames (fN = source frame index)",
              fill="black", font=font)
    chars = max(20, layout.left // max(1, layout.font_size * 6 // 10))
    row_h = layout.tile + layout.caption + layout.pad
    for r, row in enumerate(rows):
        y = layout.header + r * row_h
        if r and row.lines[0] != rows[r - 1].lines[0]:
            draw.line([(0, y - layout.pad // 2), (sheet.width, y - layout.pad // 2)], fill="grey")
        lines = [w for line in row.lines if line for w in textwrap.wrap(line, chars)]
        for k, line in enumerate(lines[: row_h // (layout.font_size + 2)]):
            draw.text((layout.pad, y + k * (layout.font_size + 2)), line, fill="black", font=font)
        for c, (frame, cap) in enumerate(zip(row.frames_THW3, row.frame_captions)):
            x = layout.left + c * (layout.tile + layout.pad)
            tile = Image.fromarray(np.ascontiguousarray(frame)).resize((layout.tile, layout.tile), Image.BILINEAR)
            sheet.paste(tile, (x, y))
            draw.text((x, y + layout.tile + 1), cap, fill="black", font=font)
    return sheet


def sheet_shape(batch: dict[str, Any], recipe, *, max_samples: int = 4, max_cols: int = 8,
                max_views: int = 6) -> tuple[int, int]:
    """(rows, cols) :func:`render_contact_sheet` draws for ``batch``."""
    from pipelines.data.recipes import recipe as get_recipe

    cfg = get_recipe(recipe)
    rows = _rows(batch, cfg, max_samples, max_cols, max_views)
    return len(rows), max((len(r.frames_THW3) for r in rows), default=1)
