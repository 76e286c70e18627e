"""Prints the model-zoo table: parameters and multiply-adds against published figures.

Usage::

    python -m vidmodels.summary [--names s3d x3d_m ...] [--fast] [--debug]

Parameters are counted with 400 classes. Compute is counted by
``torch.utils.flop_counter.FlopCounterMode`` on the ``meta`` device (no memory,
no arithmetic) for one clip at each model's canonical input, and reported as
**GMACs = counted FLOPs / 2**: the counter charges 2 FLOPs per multiply-add of
convolutions, linear layers, matmuls and attention, and nothing for norms,
activations and pooling. This is the convention of the X3D paper, torchvision's
model cards and fvcore (whose "FLOPs" are MACs), so the columns are comparable.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from vidmodels.registry import create_backbone, get_model_info, list_backbones

# Other published operating points worth checking besides the canonical input.
EXTRA_POINTS: list[tuple[str, tuple[int, int, int], float | None, str]] = [
    ("s3d", (32, 128, 128), None, "CoCLR input (seed 001 L971)"),
    ("s3d", (64, 224, 224), None, "Kinetics clip length of the S3D paper"),
    ("x3d_m", (16, 224, 224), 4.73, "X3D paper Table 3, train size"),
    ("x3d_l", (16, 312, 312), 18.37, "X3D paper Table 3, train size"),
]
FAST_SKIP = ("vit_video_b", "x3d_l")


def count_params(name: str, num_classes: int = 400) -> int:
    """Parameters of ``name`` with ``num_classes`` outputs (built on the meta device)."""
    with torch.device("meta"):
        model = create_backbone(name, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


def count_gmacs(name: str, input_size: tuple[int, int, int] | None = None, *, num_classes: int = 400) -> float:
    """Multiply-adds (G) of one forward of a ``(1, C, T, H, W)`` clip, counted on the meta device."""
    info = get_model_info(name)
    T, H, W = input_size or info.input_size
    with torch.device("meta"):
        model = create_backbone(name, num_classes=num_classes).eval()
        x_BCTHW = torch.empty(1, info.in_chans, T, H, W)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x_BCTHW)
    return counter.get_total_flops() / 2e9


def _rel(ours: float, ref: float | None, precision: float) -> str:
    """Relative difference; "=" marks an exact match, "~" one within the rounding of ``ref``."""
    if ref is None:
        return ""
    mark = "=" if ours == ref else ("~" if abs(ours - ref) <= precision / 2 + 1e-9 else " ")
    return f"{100.0 * (ours - ref) / ref:+.2f}% {mark}"


def _fmt_params(v: int | None, precision: int) -> str:
    if v is None:
        return "-"
    if precision == 1:
        return f"{v:,}"
    decimals = max(0, 6 - len(str(precision)) + 1)
    return f"{v / 1e6:.{decimals}f}M"


def _fmt(v: float | int | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _fmt_gmacs(v: float | None, precision: float) -> str:
    return "-" if v is None else f"{v:.{max(0, -math.floor(math.log10(precision)))}f}"


def build_rows(names: list[str], *, fast: bool = False) -> list[list[str]]:
    """One table row per name (plus the extra operating points of those names)."""
    rows = []
    for name in names:
        info = get_model_info(name)
        params = count_params(name)
        macs = None if fast and name in FAST_SKIP else count_gmacs(name)
        shape = "x".join(map(str, info.input_size))
        rows.append([
            name, shape, f"{params:,}", _fmt_params(info.ref_params, info.ref_params_precision),
            _rel(params, info.ref_params, info.ref_params_precision),
            _fmt(macs, ".3f"), _fmt_gmacs(info.ref_gmacs, info.ref_gmacs_precision),
            "" if macs is None else _rel(macs, info.ref_gmacs, info.ref_gmacs_precision),
            info.ref_source,
        ])
        for extra_name, size, ref, note in EXTRA_POINTS:
            if extra_name == name and not fast:
                macs = count_gmacs(name, size)
                rows.append(["  " + name, "x".join(map(str, size)), "", "", "",
                             f"{macs:.3f}", _fmt_gmacs(ref, 0.01), _rel(macs, ref, 0.01), note])
    return rows


def format_table(rows: list[list[str]]) -> str:
    """Aligns rows under the header; the last (source) column is left ragged."""
    header = ["name", "input TxHxW", "params", "ref params", "Δ", "GMACs", "ref GMACs", "Δ", "reference"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for r in [header, *rows]:
        cells = [c.ljust(w) if i in (0, 1) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells) + "  " + r[-1])
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", nargs="+", help="only these backbones")
    parser.add_argument("--fast", action="store_true", help=f"skip MACs of {', '.join(FAST_SKIP)} and extra points")
    parser.add_argument("--debug", action="store_true", help="include the *_debug sizes")
    args = parser.parse_args(argv)
    names = args.names or list_backbones(debug=None if args.debug else False)
    t0 = time.perf_counter()
    print(format_table(build_rows(names, fast=args.fast)))
    print(
        "\nparams: with 400 classes. GMACs: multiply-accumulates (= torch.utils.flop_counter FLOPs / 2) "
        "for one clip, batch 1; norms, activations and pooling are not counted. "
        "Δ = (ours - ref) / ref; '=' exact, '~' within the rounding of the published figure."
        f"\n({time.perf_counter() - t0:.1f} s)"
    )


if __name__ == "__main__":
    main()
