"""The recipe protocol: what one training sample is, declared once per recipe.

A recipe is a frozen dataclass (its config, with ``--set`` overrides) whose methods tell
the shared data plane everything it needs, so no shared module branches on a recipe's
name:

================  ==========================================================================
``columns(K)``    the sample's own columns: ``name -> (dtype, per-row shape)``
``sample(...)``   one sample from one manifest item row (pure apart from ``read``)
``video_columns`` which columns are video and how each is normalised on the training device
                  (:mod:`pipelines.data.normalize`: ``"rgb"`` ImageNet mean/std, ``"flow"``
                  the stored ±20 px encoding)
``required``      manifest columns a row must fill (``flow_uri``), with the fix to name
``exclude(item)`` why a row cannot be used (``None`` if it can); excluded rows are counted
``batch_stage``   an optional second Ray Data stage over whole batches (volume augmentation)
``preview_rows``  the contact-sheet rows of one sample (:mod:`pipelines.data.preview`)
``debug_size``    the same recipe at CPU test size (8 frames, 64 px)
================  ==========================================================================

Common columns of every recipe (``B`` rows)::

    video_id: string, label: string ("" when null), label_index: int64 (-1 when null),
    vid_index: int64 (the manifest row: a unique id per video),
    group_index: int64 (the source video the clip was cut from, manifest ``group_id``; clips of
        one UCF101 group share it; CoCLR never mines an entry of the query's own group)

An item row (what ``sample`` receives) has ``video_id``, ``uri``, ``flow_uri`` ("" when
absent), ``num_frames``, ``fps``, ``label`` ("" when null), ``label_index`` (-1 when
null), ``segments`` (JSON list of ``{label_index, start_s, end_s}``), ``codec``, ``height``,
``width`` (from the manifest, so a read needs no probe) and ``row`` (the manifest row). Every random draw comes from the generator given, in a fixed order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Literal, NamedTuple

import numpy as np

from pipelines.data import augment, sampling
from pipelines.data.sampling import ShortRule
from pipelines.io.probe import MediaError

Read = Callable[[str, str, np.ndarray], np.ndarray]
Columns = dict[str, tuple[str, tuple[int, ...]]]
COMMON: Columns = {"video_id": ("string", ()), "label": ("string", ()), "label_index": ("int64", ()),
                   "vid_index": ("int64", ()), "group_index": ("int64", ())}


class Required(NamedTuple):
    """A manifest column a recipe reads, the command that fills it, and (optionally) a function
    ``make(manifest_url)`` that fills it, used for synthetic debug datasets."""

    column: str
    fix: str
    make: Callable[[str], None] | None = None


class BatchStage(NamedTuple):
    """A Ray Data ``map_batches`` stage run after sampling: ``fn(batch, seed=, epoch=, **kwargs)``."""

    fn: Callable[..., dict[str, np.ndarray]]
    batch_size: int
    kwargs: dict[str, Any]
    columns: Columns  # the columns it adds


@dataclasses.dataclass(frozen=True)
class PreviewRow:
    """One contact-sheet row: caption lines, frames ``(T, H, W, 3)`` uint8, a caption per frame."""

    lines: list[str]
    frames_THW3: np.ndarray
    frame_captions: list[str]


def media_error(kind: str, uri: str, reason: str) -> MediaError:
    """A :class:`MediaError` naming the file (``.uri``) it is about, for the quarantine record."""
    exc = MediaError(kind, f"{uri}: {reason}")
    exc.uri = uri
    return exc


def frame_columns(T: int, max_cols: int) -> np.ndarray:
    """At most ``max_cols`` evenly spaced frame indices of ``T`` (the sheet's columns)."""
    return np.unique(np.linspace(0, T - 1, min(T, max_cols)).round().astype(np.int64))


def clip_row(lines: list[str], clip_THW3: np.ndarray, idx_T: np.ndarray, max_cols: int) -> PreviewRow:
    """A row of a clip's evenly spaced frames captioned with their source frame index."""
    cols = frame_columns(len(idx_T), max_cols)
    return PreviewRow(lines, clip_THW3[cols], [f"f{idx_T[c]}" for c in cols])


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """Fields every recipe has; subclasses add their own and implement the protocol.

    Attributes:
        clip_len: frames per clip (per block for block recipes).
        stride: temporal stride between sampled frames.
        short: rule for videos shorter than a clip (see :mod:`pipelines.data.sampling`).
        augment: clip augmentation; ``augment.out_size`` is the crop size ``S``.
        shuffle: permute the sample order per ``(seed, epoch)`` (off for evaluation).
        augment_on: where the sampled augmentation is applied: ``"cpu"`` in the data plane
            (:mod:`pipelines.data.augment`), or ``"device"`` in the training step
            (:mod:`pipelines.data.device_augment`: the sample carries the decoded frames and
            the parameters as columns). The parameters are drawn in the data plane either way,
            from the same generator in the same order, so a sample is the same on either side.
            Recipes with ``supports_device = False`` refuse ``"device"``.
        canvas: ``(H, W)`` the decoded frames are zero-padded to in ``"device"`` mode (a batch is
            one tensor); ``(0, 0)``: the largest frame of the split, filled in when the dataset is
            built (:func:`with_canvas`).
    """

    name: ClassVar[str] = ""
    needs_classes: ClassVar[bool] = False  # batches carry K-wide label tensors
    supports_device: ClassVar[bool] = False  # builds its views with view() / view_columns()

    clip_len: int = 32
    stride: int = 1
    short: ShortRule = "pad"
    augment: augment.AugmentConfig = dataclasses.field(default_factory=augment.AugmentConfig)
    shuffle: bool = True
    augment_on: Literal["cpu", "device"] = "cpu"
    canvas: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if self.augment_on not in ("cpu", "device"):
            raise ValueError(f"augment_on must be 'cpu' or 'device', got {self.augment_on!r}")
        if self.augment_on == "device" and not self.supports_device:
            raise ValueError(f"recipe {self.name!r} augments on the CPU only (augment_on=device is available for "
                             f"the single-clip recipes: classification, detection, activity)")

    @property
    def crop_size(self) -> int:
        return self.augment.out_size

    # ---------------------------------------------------------------- the protocol
    def columns(self, num_classes: int | None) -> Columns:
        raise NotImplementedError

    def sample(self, row: dict, rng: np.random.Generator, read: Read, num_classes: int | None) -> dict[str, Any]:
        raise NotImplementedError

    def video_columns(self) -> dict[str, str]:
        raise NotImplementedError

    def preview_rows(self, batch: dict, i: int, head: str, max_cols: int, max_views: int) -> list[PreviewRow]:
        raise NotImplementedError

    def debug_size(self) -> "RecipeConfig":
        """The same recipe at CPU test size (default: 8-frame clips at 64 px)."""
        return dataclasses.replace(self, clip_len=8, augment=_small(self.augment))

    def required(self) -> tuple[Required, ...]:
        return ()

    def exclude(self, item: dict) -> tuple[str, str] | None:
        """``(kind, reason)`` if the recipe cannot use this item row; default: a required column is empty."""
        for req in self.required():
            if not item.get(req.column):
                return (f"no_{req.column.removesuffix('_uri')}",
                        f"recipe {self.name!r} needs {req.column} and this row has none ({req.fix})")
        return None

    def batch_stage(self, num_classes: int | None) -> BatchStage | None:
        return None

    # ---------------------------------------------------------------- one augmented view
    def view(self, col: str, frames_THWC: np.ndarray, p: augment.ClipAugParams) -> dict[str, Any]:
        """The sample's columns for one augmented clip: augmented here (``cpu``), or the decoded
        frames on the canvas plus the parameters as ``<col>_aug_*`` columns (``device``)."""
        if self.augment_on == "device":
            from pipelines.data import device_augment

            return {col: device_augment.pad_to_canvas(frames_THWC, *self.canvas),
                    **device_augment.params_to_row(p, prefix=f"{col}_")}
        return {col: augment.augment_clip(frames_THWC, p)}

    def view_columns(self, col: str, num_frames: int) -> Columns:
        """The columns :meth:`view` gives (``T`` frames of ``S x S``, or the canvas and the parameters)."""
        if self.augment_on == "device":
            from pipelines.data import device_augment

            return {col: ("uint8", (num_frames, *self.canvas, 3)),
                    **device_augment.column_specs(num_frames, prefix=f"{col}_")}
        return {col: ("uint8", (num_frames, self.crop_size, self.crop_size, 3))}

    def device_plan(self) -> dict:
        """``column -> DevicePlan`` the training step applies (``device`` mode), else empty."""
        if self.augment_on != "device":
            return {}
        from pipelines.data.device_augment import DevicePlan

        return {col: DevicePlan(f"{col}_", is_flow=kind == "flow") for col, kind in self.video_columns().items()}

    # ---------------------------------------------------------------- derived
    @property
    def needs_flow(self) -> bool:
        return any(r.column == "flow_uri" for r in self.required())

    def random_clip(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``clip_len`` indices at ``stride`` from a uniformly random start in ``n`` frames."""
        start = sampling.random_start(n, self.clip_len, self.stride, rng)
        return sampling.clip_indices(n, start, length=self.clip_len, stride=self.stride, short=self.short)


def with_canvas(cfg: RecipeConfig, heights: list[int], widths: list[int]) -> RecipeConfig:
    """``cfg`` with its device-mode canvas set to the largest frame (``heights``/``widths`` of the
    split's rows) when it is ``(0, 0)``; unchanged in ``cpu`` mode."""
    if cfg.augment_on != "device" or cfg.canvas != (0, 0):
        return cfg
    if not heights:
        raise ValueError("augment_on=device needs the frame sizes of the split (manifest height/width)")
    return dataclasses.replace(cfg, canvas=(max(heights), max(widths)))


def _small(cfg: augment.AugmentConfig) -> augment.AugmentConfig:
    small = dataclasses.replace(cfg, out_size=64)
    if cfg.crop == "scale":  # keep X3D's 224/[256, 320] ratio at 64 px
        small = dataclasses.replace(small, short_side=(73, 91))
    return small


def labels_caption(labels_K: np.ndarray) -> str:
    """``c3 c7:0.4``: the classes on in a (soft) multi-hot vector, ``bg`` for none."""
    on = np.flatnonzero(labels_K > 0.05)
    if not len(on):
        return "bg"
    return " ".join(f"c{k}" if labels_K[k] > 0.95 else f"c{k}:{labels_K[k]:.1f}" for k in on)
