"""Contact sheets: what the model will see, as one PNG a person can read.

:func:`render_contact_sheet` draws a batch of any recipe (:mod:`pipelines.data.recipes`) as a
grid: rows are samples, or the streams/blocks/views of a sample; columns are frames
(at most ``max_cols``, evenly subsampled); the left panel names the video, its label,
the stream and the augmentation parameters (``aug_caption*`` columns, and the volume
augmentation of ``detection``); under each frame its source frame index and, for
``detection``, the frame's labels. Flow is drawn with the usual colour wheel (hue =
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
from pipelines.data.recipes import RecipeConfig, recipe as get_recipe


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


@dataclasses.dataclass
class _Row:
    lines: list[str]
    frames_THW3: np.ndarray
    frame_captions: list[str]


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


def _columns(T: int, max_cols: int) -> np.ndarray:
    return np.unique(np.linspace(0, T - 1, min(T, max_cols)).round().astype(np.int64))


def _label(batch: dict, i: int) -> str:
    name = str(batch["label"][i]) if "label" in batch else ""
    index = int(batch["label_index"][i]) if "label_index" in batch else -1
    return f"{name} ({index})" if index >= 0 else "no video label"


def _frame_labels(labels_K: np.ndarray) -> str:
    on = np.flatnonzero(labels_K > 0.05)
    if not len(on):
        return "bg"
    return " ".join(f"c{k}" if labels_K[k] > 0.95 else f"c{k}:{labels_K[k]:.1f}" for k in on)


def _volume_caption(batch: dict, i: int) -> str:
    kind = str(batch["aug_kind"][i])
    parts = [f"volume {kind}"]
    if "freeze" in kind:
        parts.append(f"freeze r={batch['aug_freeze_r'][i]} m={batch['aug_freeze_m'][i]}")
    for op in ("mixup", "cutmix"):
        if op in kind:
            parts.append(f"{op} with #{batch['aug_partner'][i]} r={batch[f'aug_{op}_r'][i]} "
                         f"n1={batch[f'aug_{op}_n1'][i]} n2={batch[f'aug_{op}_n2'][i]}")
    if "cutmix" in kind:
        parts.append(f"mode={batch['aug_cutmix_mode'][i]} delta={batch['aug_delta'][i]:g}")
    return "; ".join(parts)


def _rows(batch: dict, cfg: RecipeConfig, max_samples: int, max_cols: int, max_views: int) -> list[_Row]:
    """The sheet's rows for ``cfg.name`` (see the module docstring)."""
    rows = []
    for i in range(min(len(batch["video_id"]), max_samples)):
        head = f"#{i} {batch['video_id'][i]}  {_label(batch, i)}"
        if cfg.name == "coclr":
            for v in range(cfg.num_clips):
                idx = batch[f"frame_idx_{v}"][i]
                cap = str(batch[f"aug_caption_{v}"][i]) if f"aug_caption_{v}" in batch else ""
                cols = _columns(len(idx), max_cols)
                fc = [f"f{idx[c]}" for c in cols]
                rows.append(_Row([head, f"rgb_{v}", cap], batch[f"rgb_{v}"][i][cols], fc))
                if f"flow_{v}" in batch:
                    rgb, top = flow_to_rgb(batch[f"flow_{v}"][i][cols])
                    rows.append(_Row([head, f"flow_{v} (same crop/flip as rgb_{v})",
                                      f"colour wheel: hue=direction, max |flow| {top:.1f} px"], rgb, fc))
        elif cfg.name == "dpc":
            cap = str(batch["aug_caption"][i]) if "aug_caption" in batch else ""
            for n, (block, idx) in enumerate(zip(batch["blocks"][i], batch["frame_idx"][i])):
                cols = _columns(len(idx), max_cols)
                rows.append(_Row([head, f"block {n}/{len(idx)} frames", cap if n == 0 else ""],
                                 block[cols], [f"f{idx[c]}" for c in cols]))
        elif cfg.name in ("detection", "classification"):
            idx = batch["frame_idx"][i]
            cols = _columns(len(idx), max_cols)
            lines = [head, str(batch["aug_caption"][i]) if "aug_caption" in batch else ""]
            fc = [f"f{idx[c]}" for c in cols]
            if "frame_labels" in batch:
                fc = [f"{f} {_frame_labels(batch['frame_labels'][i][c])}" for f, c in zip(fc, cols)]
                if "aug_kind" in batch:
                    lines.append(_volume_caption(batch, i))
            rows.append(_Row(lines, batch["rgb"][i][cols], fc))
        elif cfg.name == "eval":
            views, idx_kT = batch["views"][i], batch["frame_idx"][i]
            S = cfg.spatial_crops
            for v in _columns(len(views), max_views):
                idx = idx_kT[v // S]
                cols = _columns(len(idx), max_cols)
                labels = _frame_labels(batch["video_labels"][i]) if "video_labels" in batch else ""
                rows.append(_Row([head, f"view {v}: window {v // S}, crop {v % S}", f"video labels {labels}"],
                                 views[v][cols], [f"f{idx[c]}" for c in cols]))
    return rows


def render_contact_sheet(batch: dict[str, np.ndarray], recipe: str | RecipeConfig, *, max_samples: int = 4,
                         max_cols: int = 8, max_views: int = 6, layout: Layout = Layout()) -> Image.Image:
    """Draw a numpy batch of ``recipe`` as a contact sheet (module docstring).

    Args:
        batch: columns of :func:`pipelines.data.recipes.batch_schema` (string columns optional).
        recipe: the recipe the batch was built with (its name suffices for the presets).

    Returns:
        An RGB image of ``layout.size(rows, cols)``.
    """
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


def sheet_shape(batch: dict[str, Any], recipe: str | RecipeConfig, *, max_samples: int = 4, max_cols: int = 8,
                max_views: int = 6) -> tuple[int, int]:
    """(rows, cols) :func:`render_contact_sheet` draws for ``batch``."""
    cfg = get_recipe(recipe)
    rows = _rows(batch, cfg, max_samples, max_cols, max_views)
    return len(rows), max((len(r.frames_THW3) for r in rows), default=1)
