"""What the synthetic generator draws from: the motion classes, the shape family, and the config
with its presets (:mod:`pipelines.prep.synthetic` renders and writes the datasets)."""

from __future__ import annotations

from dataclasses import dataclass


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
