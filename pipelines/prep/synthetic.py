"""Synthetic action videos whose class is defined by motion only.

No dataset can be downloaded here, so the project renders its own. Each clip shows
one or more textured foreground shapes over a cluttered, textured background; the
class decides only *how the shapes move* (direction, rotation, oscillation,
approach/recede, blinking, orbiting). Background, palette, shape, colour, size and
pattern are drawn independently of the class, so appearance alone cannot solve the
task, which is what makes CoCLR's RGB/flow co-training meaningful.

:func:`generate` writes real H.264 MP4 files in the layouts the ingest adapters read::

    OUT/ucf101/UCF-101/<Class>/v_<Class>_g<GG>_c<CC>.mp4
    OUT/ucf101/ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt
    OUT/charades/Charades_v1_480/<ID>.mp4          (multi-action videos)
    OUT/charades/Charades_v1_classes.txt
    OUT/charades/Charades_v1_{train,test}.csv
    OUT/synthetic_meta.json

Everything is a pure function of ``(seed, video index)``: every video has its own
``np.random.default_rng([seed, kind, ...])`` stream, so the output does not depend
on the number of workers or on the order in which videos are rendered.

Reproducibility: annotations and rendered frames are exact functions of the seed.
The encoded bytes, hence the decoded pixels, are too only when the width is a
multiple of 128: with other widths this libx264 build was seen to produce
different bitstreams for identical frames, depending on heap contents (it reads
memory it did not initialise), so :func:`generate` warns for such widths.

Shape legend: T frames, H height, W width, P sprite side, 2 (x, y), 3 RGB, 4 RGBA.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from pipelines.io.encode import write_video

GENERATOR_VERSION = "2"
CHARADES_HEADER = ("id", "subject", "scene", "quality", "relevance", "verified", "script",
                   "objects", "descriptions", "actions", "length")


@dataclass(frozen=True)
class MotionClass:
    """A class: CamelCase UCF-style name and a Charades-style description."""
    name: str
    description: str


# Fixed order: label i (0-based) is CLASSES[i]; classInd.txt writes i + 1, Charades c%03d i.
CLASSES: tuple[MotionClass, ...] = (
    MotionClass("MoveLeft", "Moving left"),
    MotionClass("MoveRight", "Moving right"),
    MotionClass("MoveUp", "Moving up"),
    MotionClass("MoveDown", "Moving down"),
    MotionClass("RotateCW", "Rotating clockwise"),
    MotionClass("RotateCCW", "Rotating counterclockwise"),
    MotionClass("OscillateH", "Oscillating horizontally"),
    MotionClass("OscillateV", "Oscillating vertically"),
    MotionClass("ZoomIn", "Approaching the camera"),
    MotionClass("ZoomOut", "Receding from the camera"),
    MotionClass("Blink", "Appearing and disappearing"),
    MotionClass("Orbit", "Moving in a circle"),
)

_SHAPES = ("disc", "square", "triangle", "ring", "star", "cross", "ellipse", "hexagon")
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. Named variants come from :func:`preset`.

    Args:
        preset: name of the preset this config came from (recorded in the metadata).
        seed: master seed; the output is a pure function of it and the fields below.
        num_classes: the first ``num_classes`` entries of :data:`CLASSES` are used.
        groups: UCF-style groups per class; a group is an "actor" (background scene).
        clips_per_group: clips per (class, group).
        frames: frames per single-action clip.
        height: frame height (even, for yuv420p).
        width: frame width (even, for yuv420p).
        fps: frame rate of every video.
        test_fraction: share of groups (UCF) and of videos (Charades) put in test.
        multi_videos: number of multi-action (Charades-style) videos.
        multi_seconds: (min, max) duration of a multi-action video in seconds.
        max_objects: foreground objects per video are drawn from 1..max_objects.
        noise_std: upper bound of the per-pixel camera noise (uint8 units).
        clutter: density of the static background shapes (same family as the moving ones),
            1.0 = about one per 1,500 px²; 0 leaves a smooth textured background. The main
            knob of how hard motion is to find in RGB (flow is unaffected: clutter is static).
        context: how much appearance goes with the class, as scenes and objects go with the
            action in UCF101 (pools with swimming, bows with archery). Each class has a typical
            scene palette and a typical object (shape and colours, :func:`class_style`); a
            (class, group) scene uses the class palette, and each object of a clip is the class
            object, each with probability ``context``. The label is still the motion: every
            clip of a class performs its motion, whatever it looks like. 0 (default): scenes
            are keyed by group alone, shared by every class, and appearance carries no label.
        shake: largest amplitude (px) of the camera's sinusoidal shake, drawn per clip. It moves
            the whole frame, so in flow every clip carries its own global signature.
        crf: x264 quality.
    """
    preset: str = "custom"
    seed: int = 0
    num_classes: int = len(CLASSES)
    groups: int = 10
    clips_per_group: int = 3
    frames: int = 64
    height: int = 128
    width: int = 128
    fps: float = 25.0
    test_fraction: float = 0.3
    multi_videos: int = 30
    multi_seconds: tuple[float, float] = (6.0, 10.0)
    max_objects: int = 2
    noise_std: float = 4.0
    clutter: float = 1.0
    context: float = 0.0
    shake: float = 0.8
    crf: int = 20

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= len(CLASSES):
            raise ValueError(f"num_classes must be in 1..{len(CLASSES)}, got {self.num_classes}")
        if self.height % 2 or self.width % 2 or min(self.height, self.width) < 32:
            raise ValueError(f"sizes must be even and >= 32, got {self.width}x{self.height}")
        if self.clutter < 0:
            raise ValueError(f"clutter must be >= 0, got {self.clutter}")
        if not 0 <= self.context <= 1:
            raise ValueError(f"context must be in [0, 1], got {self.context}")
        if self.frames < 8 or self.groups < 1 or self.clips_per_group < 1 or self.max_objects < 1:
            raise ValueError("frames >= 8, groups >= 1, clips_per_group >= 1, max_objects >= 1")
        if not 2.5 <= self.multi_seconds[0] <= self.multi_seconds[1]:
            raise ValueError(f"multi_seconds must be (lo, hi) with 2.5 <= lo <= hi, got {self.multi_seconds}")

    @property
    def classes(self) -> tuple[MotionClass, ...]:
        return CLASSES[:self.num_classes]

    @property
    def test_groups(self) -> tuple[int, ...]:
        """1-based groups in test for split 1: the first ~test_fraction of them, as UCF101's 1-7 of 25."""
        k = round(self.groups * self.test_fraction)
        k = min(max(k, 1), self.groups - 1) if self.groups > 1 else 0
        return tuple(range(1, k + 1))


PRESETS: dict[str, dict] = {
    # tiny is 128 wide, not 64: see the note on reproducibility in the module docstring.
    "tiny": dict(num_classes=4, groups=2, clips_per_group=2, frames=24, height=128, width=128,
                 multi_videos=3, multi_seconds=(3.0, 4.0)),
    # context 0.5: half the scenes and objects are their class's typical ones, as in UCF101 where
    # the scene goes with the action (bench/RESULTS.md, "CoCLR at demo scale", for why).
    "demo": dict(num_classes=12, groups=10, clips_per_group=3, frames=64, height=128, width=128,
                 multi_videos=30, multi_seconds=(6.0, 10.0), context=0.5),
}


def preset(name: str, **overrides) -> SyntheticConfig:
    """A named config (``tiny``: tests, seconds; ``demo``: 360 clips + 30 long videos).

    Raises:
        ValueError: for an unknown preset name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return SyntheticConfig(preset=name, **{**PRESETS[name], **overrides})


# ----------------------------------------------------------------------------- drawing

def _random_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 3)`` float32 RGB colours, saturated enough to be visible."""
    hsv_1N3 = np.stack([rng.integers(0, 180, n), rng.integers(60, 256, n),
                        rng.integers(70, 256, n)], -1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv_1N3, cv2.COLOR_HSV2RGB)[0].astype(np.float32)


def _polygon(kind: str, radius: float) -> np.ndarray:
    """``(V, 2)`` vertices of a polygonal shape of circumradius ``radius`` around 0."""
    if kind == "cross":
        w = 0.35
        unit = [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1), (-w, -w),
                (-1, -w), (-1, w), (-w, w), (-w, 1)]
        return np.array(unit, np.float64) * radius / np.hypot(1, w)
    n, offset, radii = {"square": (4, np.pi / 4, [1.0]), "triangle": (3, -np.pi / 2, [1.0]),
                        "hexagon": (6, 0.0, [1.0]), "star": (10, -np.pi / 2, [1.0, 0.45])}[kind]
    ang = offset + 2 * np.pi * np.arange(n) / n
    r = radius * np.resize(np.array(radii), n)
    return np.stack([r * np.cos(ang), r * np.sin(ang)], -1)


def _draw_shape(img: np.ndarray, kind: str, centre: tuple[float, float], radius: float,
                angle_deg: float, colour: tuple[float, ...]) -> None:
    """Draw a filled anti-aliased shape in place, with sub-pixel precision."""
    shift = 4
    f = 1 << shift
    c = (int(round(centre[0] * f)), int(round(centre[1] * f)))
    if kind == "disc":
        cv2.circle(img, c, int(round(radius * f)), colour, -1, cv2.LINE_AA, shift)
    elif kind == "ring":
        cv2.circle(img, c, int(round(0.75 * radius * f)), colour, max(1, round(0.45 * radius)),
                   cv2.LINE_AA, shift)
    elif kind == "ellipse":
        axes = (int(round(radius * f)), int(round(0.55 * radius * f)))
        cv2.ellipse(img, c, axes, angle_deg, 0, 360, colour, -1, cv2.LINE_AA, shift)
    else:
        t = np.deg2rad(angle_deg)
        rot_22 = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        pts_V2 = _polygon(kind, radius) @ rot_22.T + np.asarray(centre)
        cv2.fillPoly(img, [np.round(pts_V2 * f).astype(np.int32)], colour, cv2.LINE_AA, shift)


def _margin(cfg: SyntheticConfig) -> int:
    """Background canvas margin on each side: room for the clip crop and camera shake."""
    return max(4, min(cfg.height, cfg.width) // 8)


def make_background(rng: np.random.Generator, cfg: SyntheticConfig,
                    palette_K3: np.ndarray | None = None) -> np.ndarray:
    """A cluttered textured scene larger than the frame by :func:`_margin` on each side.

    Layers: a smooth field of palette colours (``palette_K3``, e.g. a class's typical
    scene; drawn from ``rng`` when None), optional stripes, clutter shapes from the
    same family as the foreground objects, and fine grain.

    Returns:
        canvas_HW3: float32 in [0, 255], of size ``(height + 2m, width + 2m)``.
    """
    m = _margin(cfg)
    ch, cw = cfg.height + 2 * m, cfg.width + 2 * m
    if palette_K3 is None:
        palette_K3 = _random_colours(rng, int(rng.integers(3, 7)))
    g = int(rng.integers(2, 6))
    grid_gg3 = palette_K3[rng.integers(0, len(palette_K3), (g, g))]
    canvas_HW3 = cv2.resize(grid_gg3, (cw, ch), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.6:
        theta, period = rng.uniform(0, np.pi), rng.uniform(4, 0.3 * min(ch, cw))
        yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
        wave_HW = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period) > 0
        alpha = rng.uniform(0.2, 0.6)
        colour = palette_K3[rng.integers(len(palette_K3))]
        canvas_HW3 = np.where(wave_HW[..., None], (1 - alpha) * canvas_HW3 + alpha * colour, canvas_HW3)
    canvas_u8 = np.clip(canvas_HW3, 0, 255).astype(np.uint8)
    short = min(cfg.height, cfg.width)
    for _ in range(int(rng.uniform(0.5, 1.2) * cfg.clutter * ch * cw / 1500)):
        colour = palette_K3[rng.integers(len(palette_K3))] if rng.random() < 0.5 else _random_colours(rng, 1)[0]
        _draw_shape(canvas_u8, _SHAPES[rng.integers(len(_SHAPES))], tuple(rng.uniform(0, [cw, ch])),
                    rng.uniform(0.03, 0.12) * short, rng.uniform(0, 360), tuple(map(float, colour)))
    grain_HW = cv2.resize(rng.standard_normal((ch // 2 + 1, cw // 2 + 1), dtype=np.float32), (cw, ch))
    canvas_HW3 = canvas_u8.astype(np.float32) + rng.uniform(4, 12) * grain_HW[..., None]
    return np.clip(canvas_HW3, 0, 255)


def _make_sprite(rng: np.random.Generator, radius: float, style: "Style | None" = None) -> np.ndarray:
    """A striped shape with an off-centre marker, so rotation of any shape is visible; its shape
    and three colours are ``style``'s when given (a class's typical object), else drawn.

    Returns:
        sprite_PP4: float32 premultiplied RGBA, alpha in [0, 1], shape centred.
    """
    ss = 4  # supersampling for a smooth edge after INTER_AREA
    p = 2 * int(np.ceil(1.5 * radius)) + 1
    big = p * ss
    c = (big - 1) / 2
    mask_PP = np.zeros((big, big), np.uint8)
    shape = _SHAPES[rng.integers(len(_SHAPES))] if style is None else style.shape
    _draw_shape(mask_PP, shape, (c, c), radius * ss, rng.uniform(0, 360), (255,))
    colours_33 = _random_colours(rng, 3) if style is None else style.colours_33
    theta, period = rng.uniform(0, np.pi), rng.uniform(0.5, 1.0) * radius * ss
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32) - c
    stripe_PP = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period) > 0
    rgb_PP3 = np.where(stripe_PP[..., None], colours_33[1], colours_33[0]).astype(np.float32)
    phi = rng.uniform(0, 2 * np.pi)
    marker = (c + 0.55 * radius * ss * np.cos(phi), c + 0.55 * radius * ss * np.sin(phi))
    cv2.circle(rgb_PP3, tuple(int(round(v)) for v in marker), int(0.3 * radius * ss),
               tuple(map(float, colours_33[2])), -1)
    rgba_PP4 = np.dstack([rgb_PP3, mask_PP.astype(np.float32) / 255])
    sprite_PP4 = cv2.resize(rgba_PP4, (p, p), interpolation=cv2.INTER_AREA)
    sprite_PP4[..., :3] *= sprite_PP4[..., 3:]
    return sprite_PP4


# ----------------------------------------------------------------------------- motion

@dataclass(frozen=True)
class Track:
    """Per-frame pose of one foreground object, in frame pixels (before camera shake)."""
    x_T: np.ndarray
    y_T: np.ndarray
    angle_T: np.ndarray  # degrees, counter-clockwise on screen (OpenCV convention)
    scale_T: np.ndarray
    alpha_T: np.ndarray


class _Motion(NamedTuple):
    """Offsets relative to the pose at the motion's first frame (all zero / one there)."""
    dx_T: np.ndarray
    dy_T: np.ndarray
    angle_T: np.ndarray
    scale_T: np.ndarray
    alpha_T: np.ndarray


def _ramp(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)


def _wobble(rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    """Smooth small deviation starting at 0: jitter that carries no direction."""
    f, phi = rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
    return amp * (np.sin(2 * np.pi * f * _ramp(n) + phi) - np.sin(phi))


def _motion(rng: np.random.Generator, n: int, short: float, dx_T=None, dy_T=None, angle_T=None,
            scale_T=None, alpha_T=None) -> _Motion:
    """Fill unspecified channels with class-free jitter: a little drift and spin."""
    drift = rng.uniform(-0.04, 0.04, 2) * short
    return _Motion(dx_T if dx_T is not None else drift[0] * _ramp(n) + _wobble(rng, n, 0.015 * short),
                   dy_T if dy_T is not None else drift[1] * _ramp(n) + _wobble(rng, n, 0.015 * short),
                   angle_T if angle_T is not None else rng.uniform(-15, 15) * _ramp(n),
                   scale_T if scale_T is not None else np.ones(n),
                   alpha_T if alpha_T is not None else np.ones(n))


def _translate(ux: float, uy: float) -> Callable[[np.random.Generator, int, float], _Motion]:
    def motion(rng: np.random.Generator, n: int, short: float) -> _Motion:
        along_T = rng.uniform(0.3, 0.55) * short * _ramp(n) ** rng.uniform(0.8, 1.25)
        across_T = rng.uniform(-0.1, 0.1) * along_T + _wobble(rng, n, 0.015 * short)
        return _motion(rng, n, short, ux * along_T - uy * across_T, uy * along_T + ux * across_T)
    return motion


def _rotate(sign: float) -> Callable[[np.random.Generator, int, float], _Motion]:
    def motion(rng: np.random.Generator, n: int, short: float) -> _Motion:
        return _motion(rng, n, short, angle_T=sign * rng.uniform(120, 300) * _ramp(n) ** rng.uniform(0.8, 1.25))
    return motion


def _oscillate(ux: float, uy: float) -> Callable[[np.random.Generator, int, float], _Motion]:
    def motion(rng: np.random.Generator, n: int, short: float) -> _Motion:
        cycles = min(rng.uniform(1.5, 3.0), n / 10)  # >= 10 frames a period: no aliasing
        off_T = rng.choice([-1, 1]) * rng.uniform(0.12, 0.22) * short * np.sin(2 * np.pi * cycles * _ramp(n))
        across_T = _wobble(rng, n, 0.015 * short)
        return _motion(rng, n, short, ux * off_T - uy * across_T, uy * off_T + ux * across_T)
    return motion


def _zoom(sign: float) -> Callable[[np.random.Generator, int, float], _Motion]:
    def motion(rng: np.random.Generator, n: int, short: float) -> _Motion:
        return _motion(rng, n, short, scale_T=rng.uniform(2.0, 3.0) ** (sign * _ramp(n)))
    return motion


def _blink(rng: np.random.Generator, n: int, short: float) -> _Motion:
    cycles = max(1, min(int(rng.integers(2, 4)), n // 8))  # whole cycles: visible at both ends
    alpha_T = np.clip(0.5 + 2.5 * np.cos(2 * np.pi * cycles * _ramp(n)), 0, 1)
    return _motion(rng, n, short, alpha_T=alpha_T)


def _orbit(rng: np.random.Generator, n: int, short: float) -> _Motion:
    r, phi0 = rng.uniform(0.12, 0.2) * short, rng.uniform(0, 2 * np.pi)
    phi_T = phi0 + rng.choice([-1, 1]) * 2 * np.pi * rng.uniform(0.8, 1.5) * _ramp(n)
    return _motion(rng, n, short, r * (np.cos(phi_T) - np.cos(phi0)), r * (np.sin(phi_T) - np.sin(phi0)))


# Screen coordinates: x right, y down; cv2 angles are counter-clockwise on screen.
_MOTIONS: dict[str, Callable[[np.random.Generator, int, float], _Motion]] = {
    "MoveLeft": _translate(-1, 0), "MoveRight": _translate(1, 0),
    "MoveUp": _translate(0, -1), "MoveDown": _translate(0, 1),
    "RotateCW": _rotate(-1), "RotateCCW": _rotate(1),
    "OscillateH": _oscillate(1, 0), "OscillateV": _oscillate(0, 1),
    "ZoomIn": _zoom(1), "ZoomOut": _zoom(-1), "Blink": _blink, "Orbit": _orbit,
}
assert set(_MOTIONS) == {c.name for c in CLASSES}


def _place(rng: np.random.Generator, off_T: np.ndarray, extent: int, margin: float) -> float:
    """A start coordinate keeping ``start + off_T`` inside ``[margin, extent - margin]`` if possible."""
    lo, hi = margin - off_T.min(), extent - margin - off_T.max()
    return float(rng.uniform(lo, hi)) if lo < hi else float((lo + hi) / 2)


# ----------------------------------------------------------------------------- rendering

def _composite(frame_HW3: np.ndarray, sprite_PP4: np.ndarray, x: float, y: float, angle: float,
               scale: float, alpha: float) -> None:
    """Alpha-blend a rotated, scaled sprite centred at (x, y) into the frame, in place."""
    if alpha <= 0:
        return
    c = (sprite_PP4.shape[0] - 1) / 2
    m_23 = cv2.getRotationMatrix2D((c, c), float(angle), float(scale))
    m_23[:, 2] += (x - c, y - c)
    h, w = frame_HW3.shape[:2]
    warped_HW4 = cv2.warpAffine(sprite_PP4, m_23, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    frame_HW3 *= 1 - alpha * warped_HW4[..., 3:]
    frame_HW3 += alpha * warped_HW4[..., :3]


def _render(rng: np.random.Generator, canvas_HW3: np.ndarray, sprites: list[np.ndarray],
            tracks: list[Track], cfg: SyntheticConfig, n: int) -> np.ndarray:
    """Film the scene with a shaky, noisy camera.

    The crop offset into the canvas is random per clip; the shake is a smooth
    sinusoid under a pixel, applied to background and objects alike, so it adds
    motion without a net direction.

    Returns:
        frames_THW3: uint8 RGB.
    """
    h, w, m = cfg.height, cfg.width, _margin(cfg)
    base_2 = rng.uniform(1, 2 * m - 1, 2)
    t_T1 = np.arange(n)[:, None] / cfg.fps
    shake_T2 = cfg.shake * rng.uniform(0, 1, 2) * np.sin(2 * np.pi * rng.uniform(0.3, 1.5, 2) * t_T1
                                               + rng.uniform(0, 2 * np.pi, 2))
    sigma = rng.uniform(0.5, 1.0) * cfg.noise_std
    shift_23 = np.eye(2, 3, dtype=np.float64)
    frames_THW3 = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        shift_23[:, 2] = base_2 + shake_T2[t]
        frame_HW3 = cv2.warpAffine(canvas_HW3, shift_23, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        for sprite_PP4, tr in zip(sprites, tracks):
            _composite(frame_HW3, sprite_PP4, tr.x_T[t] - shake_T2[t, 0], tr.y_T[t] - shake_T2[t, 1],
                       tr.angle_T[t], tr.scale_T[t], tr.alpha_T[t])
        frame_HW3 += rng.standard_normal((h, w, 3), dtype=np.float32) * sigma + 0.5
        frames_THW3[t] = np.clip(frame_HW3, 0, 255)
    return frames_THW3


@dataclass(frozen=True)
class Style:
    """A class's typical appearance (``SyntheticConfig.context``): its scene palette and its object."""
    palette_K3: np.ndarray
    shape: str
    colours_33: np.ndarray


def class_style(cfg: SyntheticConfig, cls_idx: int) -> Style:
    """The typical scene palette and object of class ``cls_idx``; a function of (seed, class) only."""
    rng = np.random.default_rng([cfg.seed, 6, cls_idx])
    return Style(_random_colours(rng, int(rng.integers(3, 7))), _SHAPES[cls_idx % len(_SHAPES)],
                 _random_colours(rng, 3))


def _sample_sprites(rng: np.random.Generator, cfg: SyntheticConfig, style: Style | None = None) -> list[np.ndarray]:
    """Foreground appearance: drawn before, and independently of, any motion; each object is
    ``style``'s with probability ``cfg.context`` when a class style is given."""
    short = min(cfg.height, cfg.width)
    n_obj = int(rng.integers(1, cfg.max_objects + 1))
    typical = [style is not None and rng.random() < cfg.context for _ in range(n_obj)]
    return [_make_sprite(rng, rng.uniform(0.08, 0.15) * short, style if t else None) for t in typical]


def render_clip(cls_idx: int, rng: np.random.Generator, cfg: SyntheticConfig, *,
                canvas_HW3: np.ndarray | None = None, style: Style | None = None) -> np.ndarray:
    """Render a single-action clip of class ``CLASSES[cls_idx]``: all objects do that motion.

    Args:
        cls_idx: 0-based class index into :data:`CLASSES`.
        rng: the clip's random stream.
        cfg: sizes, frame count, fps, noise.
        canvas_HW3: background scene from :func:`make_background` (a UCF "group");
            drawn from ``rng`` when None.
        style: the class's typical appearance (:func:`class_style`), given to each object
            with probability ``cfg.context``; None: every object is drawn.

    Returns:
        frames_THW3: uint8 RGB, ``(cfg.frames, cfg.height, cfg.width, 3)``.
    """
    if canvas_HW3 is None:
        canvas_HW3 = make_background(rng, cfg)
    sprites = _sample_sprites(rng, cfg, style)
    n, short = cfg.frames, min(cfg.height, cfg.width)
    tracks = []
    for _ in sprites:
        mo = _MOTIONS[CLASSES[cls_idx].name](rng, n, short)
        x0, y0 = _place(rng, mo.dx_T, cfg.width, 0.1 * short), _place(rng, mo.dy_T, cfg.height, 0.1 * short)
        s0 = 1 / np.sqrt(mo.scale_T.max() * mo.scale_T.min())  # a zoom is centred on the drawn size
        tracks.append(Track(x0 + mo.dx_T, y0 + mo.dy_T, rng.uniform(0, 360) + mo.angle_T,
                            s0 * mo.scale_T, mo.alpha_T))
    return _render(rng, canvas_HW3, sprites, tracks, cfg, n)


# ----------------------------------------------------------------------------- multi-action

@dataclass(frozen=True)
class Segment:
    """An action of one object over frames ``[start, end)``."""
    cls_idx: int
    start: int
    end: int
    actor: int

    def seconds(self, fps: float) -> tuple[float, float]:
        return self.start / fps, self.end / fps


@dataclass(frozen=True)
class MultiActionPlan:
    """Everything about a multi-action video except its pixels."""
    n_frames: int
    tracks: list[Track]
    segments: list[Segment]  # sorted by start


def _feasible_motion(rng: np.random.Generator, cfg: SyntheticConfig, n: int,
                     pose: tuple[float, float, float]) -> tuple[int, _Motion]:
    """Draw (class, motion) until the object stays in frame and at a sane size."""
    short, m = min(cfg.height, cfg.width), 0.1 * min(cfg.height, cfg.width)
    x, y, s = pose
    for _ in range(30):
        cls_idx = int(rng.integers(cfg.num_classes))
        mo = _MOTIONS[CLASSES[cls_idx].name](rng, n, short)
        xs, ys, ss = x + mo.dx_T, y + mo.dy_T, s * mo.scale_T
        if (m <= xs.min() and xs.max() <= cfg.width - m and m <= ys.min() and ys.max() <= cfg.height - m
                and 0.4 <= ss.min() and ss.max() <= 2.5):
            return cls_idx, mo
    return cls_idx, mo  # rare; the object may leave the frame for a while


def _timeline(rng: np.random.Generator, cfg: SyntheticConfig, n: int) -> list[tuple[int, int]]:
    """Segments ``[start, end)`` of one object: 1-2.5 s actions separated by 0.3-1.2 s rests."""
    spans, t = [], int(round(rng.uniform(0.3, 1.2) * cfg.fps))
    min_len = int(round(cfg.fps))
    while t + min_len <= n:
        end = min(t + int(round(rng.uniform(1.0, 2.5) * cfg.fps)), n)
        spans.append((t, end))
        t = end + int(round(rng.uniform(0.3, 1.2) * cfg.fps))
    return spans


def plan_multi_action(rng: np.random.Generator, cfg: SyntheticConfig) -> MultiActionPlan:
    """Sample duration, per-object action timelines and poses; objects rest between actions."""
    n = int(round(rng.uniform(*cfg.multi_seconds) * cfg.fps))
    tracks, segments = [], []
    for actor in range(int(rng.integers(1, cfg.max_objects + 1))):
        pose_5T = np.empty((5, n))
        pose_5T[:] = np.array([rng.uniform(0.3, 0.7) * cfg.width, rng.uniform(0.3, 0.7) * cfg.height,
                               rng.uniform(0, 360), 1.0, 1.0])[:, None]
        for start, end in _timeline(rng, cfg, n):
            x, y, angle, s, _ = pose_5T[:, start]
            cls_idx, mo = _feasible_motion(rng, cfg, end - start, (x, y, s))
            pose_5T[:, start:end] = [x + mo.dx_T, y + mo.dy_T, angle + mo.angle_T, s * mo.scale_T, mo.alpha_T]
            pose_5T[:, end:] = pose_5T[:, end - 1:end]  # rest: no action until the next segment
            segments.append(Segment(cls_idx, start, end, actor))
        tracks.append(Track(*pose_5T))
    return MultiActionPlan(n, tracks, sorted(segments, key=lambda sg: (sg.start, sg.end, sg.actor)))


def render_multi_action(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, list[Segment]]:
    """Render a long video where objects act in temporal segments and rest in between.

    The plan is drawn first from ``rng``, so :func:`plan_multi_action` on a fresh
    generator with the same seed returns the same segments without rendering.

    Returns:
        frames_THW3: uint8 RGB; segments: the annotated actions, sorted by start.
    """
    plan = plan_multi_action(rng, cfg)
    canvas_HW3 = make_background(rng, cfg)
    sprites = [_make_sprite(rng, rng.uniform(0.08, 0.15) * min(cfg.height, cfg.width)) for _ in plan.tracks]
    return _render(rng, canvas_HW3, sprites, plan.tracks, cfg, plan.n_frames), plan.segments


# ----------------------------------------------------------------------------- dataset

def _clip_rng(cfg: SyntheticConfig, cls_idx: int, group: int, clip: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, 0, cls_idx, group, clip])


def _group_rng(cfg: SyntheticConfig, group: int) -> np.random.Generator:
    # Keyed by group only: group g is the same scene for every class, so backgrounds carry no label.
    return np.random.default_rng([cfg.seed, 1, group])


def ucf_scene(cfg: SyntheticConfig, cls_idx: int, group: int) -> np.ndarray:
    """The background of (class, group): the group's scene when ``context`` is 0; else a scene of
    that class and group whose palette is the class's with probability ``context``."""
    if not cfg.context:
        return make_background(_group_rng(cfg, group), cfg)
    rng = np.random.default_rng([cfg.seed, 7, cls_idx, group])
    typical = rng.random() < cfg.context
    return make_background(rng, cfg, class_style(cfg, cls_idx).palette_K3 if typical else None)


def _multi_rng(cfg: SyntheticConfig, index: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, 2, index])


def ucf_name(cls_name: str, group: int, clip: int) -> str:
    """``MoveLeft/v_MoveLeft_g01_c02.mp4`` for 1-based group and clip."""
    return f"{cls_name}/v_{cls_name}_g{group:02d}_c{clip:02d}.mp4"


def charades_ids(cfg: SyntheticConfig) -> list[str]:
    """Distinct 5-character uppercase alphanumeric IDs, deterministic in the seed."""
    rng, ids = np.random.default_rng([cfg.seed, 3]), []
    while len(ids) < cfg.multi_videos:
        vid = "".join(_ID_ALPHABET[i] for i in rng.integers(0, len(_ID_ALPHABET), 5))
        if vid not in ids:
            ids.append(vid)
    return ids


class _Job(NamedTuple):
    kind: str  # "ucf" or "multi"
    path: str
    key: tuple[int, ...]  # (cls_idx, group, clip) or (index,)


def _run_job(job: _Job, cfg: SyntheticConfig, skip_existing: bool) -> bool:
    """Render and encode one video; returns False when an existing file was kept."""
    path = Path(job.path)
    if skip_existing and path.exists():
        return False
    if job.kind == "ucf":
        cls_idx, group, clip = job.key
        style = class_style(cfg, cls_idx) if cfg.context else None
        frames_THW3 = render_clip(cls_idx, _clip_rng(cfg, cls_idx, group, clip), cfg,
                                  canvas_HW3=ucf_scene(cfg, cls_idx, group), style=style)
    else:
        frames_THW3, _ = render_multi_action(_multi_rng(cfg, job.key[0]), cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial.mp4")  # atomic: a kept file is always complete
    write_video(str(tmp), frames_THW3, fps=cfg.fps, codec="libx264", crf=cfg.crf)
    os.replace(tmp, path)
    return True


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def _run_jobs(jobs: list[_Job], cfg: SyntheticConfig, workers: int, skip_existing: bool,
              progress: bool) -> int:
    """Run jobs serially or in a process pool; returns how many videos were written."""
    bar = tqdm(total=len(jobs), desc="synthetic videos", unit="video", disable=not progress)
    written = 0
    if workers <= 1:
        for job in jobs:
            written += _run_job(job, cfg, skip_existing)
            bar.update()
    else:
        # spawn, not fork: a child forked after OpenCV's thread pool has run can deadlock in cv2.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
            futures = [pool.submit(_run_job, job, cfg, skip_existing) for job in jobs]
            for fut in as_completed(futures):
                written += fut.result()
                bar.update()
    bar.close()
    return written


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def _write_ucf_lists(root: Path, cfg: SyntheticConfig) -> tuple[int, int]:
    """classInd / trainlist01 (with 1-based label) / testlist01 (no label), as UCF101."""
    lists = root / "ucf101" / "ucfTrainTestlist"
    _write_lines(lists / "classInd.txt", [f"{i + 1} {c.name}" for i, c in enumerate(cfg.classes)])
    train, test = [], []
    for i, c in enumerate(cfg.classes):
        for g in range(1, cfg.groups + 1):
            for k in range(1, cfg.clips_per_group + 1):
                name = ucf_name(c.name, g, k)
                (test.append(name) if g in cfg.test_groups else train.append(f"{name} {i + 1}"))
    _write_lines(lists / "trainlist01.txt", train)
    _write_lines(lists / "testlist01.txt", test)
    return len(train), len(test)


def _charades_row(cfg: SyntheticConfig, vid: str, index: int, plan: MultiActionPlan) -> dict[str, str]:
    rng = np.random.default_rng([cfg.seed, 5, index])
    descs = [CLASSES[s.cls_idx].description.lower() for s in plan.segments]
    actions = ";".join(f"c{s.cls_idx:03d} {s.start / cfg.fps:.2f} {s.end / cfg.fps:.2f}" for s in plan.segments)
    return {"id": vid, "subject": f"SY{int(rng.integers(1, 100)):02d}", "scene": "Synthetic",
            "quality": str(int(rng.integers(5, 8))), "relevance": str(int(rng.integers(5, 8))),
            "verified": "Yes",
            "script": f"{len(plan.tracks)} shape(s) over a cluttered background: " + ", then ".join(descs) + ".",
            "objects": "", "descriptions": "; ".join(f"A shape is {d}." for d in descs),
            "actions": actions, "length": f"{plan.n_frames / cfg.fps:.2f}"}


def _write_charades(root: Path, cfg: SyntheticConfig, ids: list[str]) -> tuple[int, int, int]:
    """Classes file and train/test CSVs; returns (train, test, segments) counts."""
    cdir = root / "charades"
    _write_lines(cdir / "Charades_v1_classes.txt", [f"c{i:03d} {c.description}" for i, c in enumerate(cfg.classes)])
    n = len(ids)
    k = min(max(round(n * cfg.test_fraction), 1), n - 1) if n > 1 else 0
    test_idx = set(np.random.default_rng([cfg.seed, 4]).permutation(n)[:k].tolist())
    rows = {"train": [], "test": []}
    n_seg = 0
    for i, vid in enumerate(ids):
        plan = plan_multi_action(_multi_rng(cfg, i), cfg)
        n_seg += len(plan.segments)
        rows["test" if i in test_idx else "train"].append(_charades_row(cfg, vid, i, plan))
    for split, split_rows in rows.items():
        with open(cdir / f"Charades_v1_{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CHARADES_HEADER, lineterminator="\n")
            writer.writeheader()
            writer.writerows(split_rows)
    return len(rows["train"]), len(rows["test"]), n_seg


def _meta(cfg: SyntheticConfig, counts: dict[str, int]) -> dict:
    return {"generator_version": GENERATOR_VERSION, "seed": cfg.seed, "preset": cfg.preset,
            "classes": [dataclasses.asdict(c) for c in cfg.classes], "counts": counts,
            "fps": cfg.fps, "size": {"height": cfg.height, "width": cfg.width},
            "frames_per_clip": cfg.frames, "test_groups": list(cfg.test_groups),
            "config": dataclasses.asdict(cfg)}


def generate(out_dir: str, cfg: SyntheticConfig, *, workers: int | None = None, progress: bool = True,
             overwrite: bool = False) -> dict:
    """Write the UCF101-style and Charades-style synthetic datasets under ``out_dir`` (local).

    Idempotent: annotations are always rewritten (byte-identical for the same config).
    Videos that already exist are kept when ``synthetic_meta.json`` there records the
    same config, since they are then the same videos (written atomically); otherwise
    the metadata is removed first and every video is re-rendered. Files of an earlier,
    larger config that this one does not name are left in place.

    Args:
        out_dir: local output root.
        cfg: what to generate.
        workers: processes (default ``os.cpu_count()``); <= 1 renders in this process.
        progress: show a tqdm bar.
        overwrite: re-render every video even if the tree is up to date.

    Returns:
        Summary: counts, videos written and kept, wall seconds.
    """
    t0 = time.perf_counter()
    if cfg.width % 128:
        warnings.warn(f"width {cfg.width} is not a multiple of 128: libx264 output may not be "
                      "byte-reproducible (see pipelines.prep.synthetic's docstring)", stacklevel=2)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    meta_path = root / "synthetic_meta.json"
    n_ucf = cfg.num_classes * cfg.groups * cfg.clips_per_group
    n_ucf_test = cfg.num_classes * len(cfg.test_groups) * cfg.clips_per_group
    counts = {"classes": cfg.num_classes, "ucf_clips": n_ucf, "ucf_train": n_ucf - n_ucf_test,
              "ucf_test": n_ucf_test, "charades_videos": cfg.multi_videos}
    ids = charades_ids(cfg)
    counts["charades_train"], counts["charades_test"], counts["charades_segments"] = _write_charades(root, cfg, ids)
    _write_ucf_lists(root, cfg)
    meta = _meta(cfg, counts)
    reuse = (not overwrite and meta_path.exists()
             and json.loads(meta_path.read_text()) == json.loads(json.dumps(meta)))
    meta_path.unlink(missing_ok=True)  # until every video matches this config again
    jobs = [_Job("multi", str(root / "charades" / "Charades_v1_480" / f"{vid}.mp4"), (i,))
            for i, vid in enumerate(ids)]  # the long ones first, for load balance
    jobs += [_Job("ucf", str(root / "ucf101" / "UCF-101" / ucf_name(c.name, g, k)), (i, g, k))
             for i, c in enumerate(cfg.classes) for g in range(1, cfg.groups + 1)
             for k in range(1, cfg.clips_per_group + 1)]
    written = _run_jobs(jobs, cfg, workers or os.cpu_count() or 1, reuse, progress)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return {"out": str(root), "preset": cfg.preset, "seed": cfg.seed, **counts,
            "written": written, "kept": len(jobs) - written, "seconds": round(time.perf_counter() - t0, 2)}
