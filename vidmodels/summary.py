"""Prints the model-zoo table: parameters and multiply-adds against published figures.

Usage::

    python -m vidmodels.summary [--names s3d x3d_m ...] [--fast] [--debug]
    python -m vidmodels.summary --coarse-fine   # Coarse-Fine vs the paper (seed 000)

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


# Coarse-Fine (seed 000, Table 3.2 / 3.3e): GMACs of 128 frames at 224², K = 157.
CF_PAPER_GMACS: dict[str, float] = {
    "x3d": 37.96, "coarse_only/stride": 15.42, "coarse_only/grid": 16.53, "fine_fine": 94.80, "coarse_fine": 73.37,
}
CF_PAPER_RATIO = 0.774  # Coarse-Fine / Fine-Fine (thesis L472)
_CF_PARTS: dict[str, tuple[str, ...]] = {
    "stem+res2": ("coarse.stem", "coarse.stages.0"),
    "grid pool h": ("confidence",),
    "res3-conv5": ("coarse.stages.1", "coarse.stages.2", "coarse.stages.3", "coarse.conv5"),
    "head": ("coarse.head",),
    "fine stream": ("fine",),
    "fusion": ("fusion",),
}


def _own_flops(counts: dict[str, int]) -> dict[str, int]:
    """FLOPs each module does itself: its count minus that of its nearest counted descendants."""
    own = {k: v for k, v in counts.items() if k != "Global"}
    for k, v in own.copy().items():
        parent = k
        while "." in parent:
            parent = parent.rsplit(".", 1)[0]
            if parent in own:
                own[parent] -= v
                break
    return own


def count_coarse_fine(
    mode: str, pool: str = "grid", *, frames: int = 128, size: int = 224, num_classes: int = 157, arch: str = "x3d_m"
) -> dict[str, float]:
    """GMACs of one Coarse-Fine forward (batch 1, Coarse and Fine clips both ``frames`` long), by part.

    Counted on the meta device (Grid Pool's indices are shapes there, which is all the
    counter needs). ``aggregation`` is the parameter-free Gaussian contraction of the
    fusion (a bmm, counted); ``paper`` leaves it out, as module-based counters do.

    Returns:
        ``{"total", "aggregation", "paper", "params", <part>: ...}`` (GMACs; params as a count).
    """
    # Imported here: the zoo table does not need the methods package.
    from vidmodels.methods.coarse_fine import CoarseFine

    with torch.device("meta"):
        model = CoarseFine(arch=arch, num_classes=num_classes, mode=mode, pool=pool).eval()
        x_BCTHW = torch.empty(1, 3, frames, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x_BCTHW, x_BCTHW if mode in ("coarse_fine", "fine_fine") else None)
    own = {k.removeprefix("CoarseFine."): v for k, v in _own_flops(
        {k: sum(ops.values()) for k, ops in counter.get_flop_counts().items()}).items()}
    out = {"total": counter.get_total_flops() / 2e9, "params": float(sum(p.numel() for p in model.parameters()))}
    for part, prefixes in _CF_PARTS.items():
        out[part] = sum(v for k, v in own.items() if any(k == p or k.startswith(p + ".") for p in prefixes)) / 2e9
    out["aggregation"] = sum(v for k, v in own.items() if k.endswith(".aggregate")) / 2e9
    out["paper"] = out["total"] - out["aggregation"]
    return out


def coarse_fine_rows(*, frames: int = 128, size: int = 224) -> dict[str, dict[str, float]]:
    """Counts of X3D, Coarse-only (stride, grid), Fine-Fine and Coarse-Fine, plus the paper's sum.

    The paper's Coarse-Fine figure equals X3D + Coarse-only (grid) + the fusion cost of
    Fine-Fine, whose fusion runs on 128 main-stream steps; Coarse-Fine's fusion runs on
    αT + 1 = 33 steps and costs about a third of that. ``coarse_fine (paper sum)`` rebuilds
    the paper's figure from the counted parts.
    """
    rows = {name: count_coarse_fine(*name.split("/"), frames=frames, size=size) for name in CF_PAPER_GMACS}
    ff, x3d = rows["fine_fine"], rows["x3d"]
    ff_fusion = ff["paper"] - 2 * x3d["paper"] + x3d["head"]  # Fine-Fine runs no Fine head
    rows["coarse_fine (paper sum)"] = {"paper": x3d["paper"] + rows["coarse_only/grid"]["paper"] + ff_fusion}
    return rows


def coarse_fine_table(rows: dict[str, dict[str, float]] | None = None) -> str:
    """The Coarse-Fine compute table next to the paper's figures, with the R6 breakdown."""
    rows = rows or coarse_fine_rows()
    header = f"{'model':26s} {'GMACs':>8s} {'paper-acc.':>10s} {'ref':>6s} {'Δ':>8s} {'params':>10s}  "
    lines = [header + "stem+res2 / h / res3-conv5 / head / fine / fusion (of which aggregation)"]
    for name, r in rows.items():
        ref = CF_PAPER_GMACS.get(name.split(" ")[0])
        parts = " / ".join(f"{r[p]:.3f}" for p in _CF_PARTS) + f" ({r['aggregation']:.3f})" if "total" in r else ""
        lines.append(
            f"{name:26s} {_fmt(r.get('total'), '8.2f'):>8s} {r['paper']:10.2f} {_fmt(ref, '6.2f')} "
            f"{_rel(r['paper'], ref, 0.01):>8s} {_fmt(r.get('params'), '10,.0f'):>10s}  {parts}"
        )
    ratio = rows["coarse_fine"]["paper"] / rows["fine_fine"]["paper"]
    lines.append(
        f"Coarse-Fine / Fine-Fine: {ratio:.3f} (paper {CF_PAPER_RATIO}); with the paper's sum: "
        f"{rows['coarse_fine (paper sum)']['paper'] / rows['fine_fine']['paper']:.3f}\n"
        "GMACs: counted (torch.utils.flop_counter FLOPs / 2), batch 1, 128 frames at 224², K = 157. "
        "paper-acc.: without the parameter-free Gaussian contraction of the fusion, which module-based "
        "counters (the authors') do not see. Δ on paper-acc. Per frame (/128): stem+res2, res3-conv5 and "
        "head of the x3d row give R6's 0.0617 / 0.2339 / 0.0012."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", nargs="+", help="only these backbones")
    parser.add_argument("--fast", action="store_true", help=f"skip MACs of {', '.join(FAST_SKIP)} and extra points")
    parser.add_argument("--debug", action="store_true", help="include the *_debug sizes")
    parser.add_argument("--coarse-fine", action="store_true", help="only the Coarse-Fine table (seed 000, Table 3.2)")
    args = parser.parse_args(argv)
    if args.coarse_fine:
        t0 = time.perf_counter()
        print(coarse_fine_table())
        print(f"({time.perf_counter() - t0:.1f} s)")
        return
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
