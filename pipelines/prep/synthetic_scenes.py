"""Drawing, motion and rendering of the synthetic clips: backgrounds, sprites, class styles, the
motion of each class, and the shaky, noisy camera (:mod:`pipelines.prep.synthetic`'s legend).

Shape legend: T frames, H height, W width, P sprite side, 2 (x, y), 3 RGB, 4 RGBA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import cv2
import numpy as np

from pipelines.prep.synthetic_config import _SHAPES, CLASSES, SyntheticConfig

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
