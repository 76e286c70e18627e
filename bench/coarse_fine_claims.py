"""Seed 000 ch. 3's Coarse-Fine claims at CPU scale, on synthetic multi-action videos held in memory.

Renders multi-action videos (:func:`pipelines.prep.synthetic.render_multi_action`: objects act in
segments and rest between them) at 64 px, then for each seed trains, with the platform's own
pieces (the ``activity`` and ``coarse_fine`` recipes' ``sample``, :class:`CoarseFineDetector`'s
localisation loss, its parameter groups and the stage-1 -> stage-2 hand-off of
:mod:`pipelines.methods.coarse_fine`), ``x3d_debug`` streams:

* stage 1, ``steps1`` Adam steps each from the same initialisation: X3D alone (``x3d``: per-frame
  head, no pooling) and the Coarse-only network with each pooling after res2 (``grid`` / ``stride``
  / ``avg`` / ``max``, Table 3.3e), on T-frame clips at the stride;
* stage 2, ``steps2`` more steps: Coarse-Fine (from ``grid`` + ``x3d``) with fusion over CTHW and
  over C (Table 3.3b), Fine-Fine (both streams from ``x3d``), fusion layers at 10x LR, Fine stream
  frozen (the authors' cached features) unless ``freeze_fine=false``; and ``x3d_long``, X3D trained
  for the same ``steps1 + steps2`` steps (the fair single-stream baseline).

Every arm is scored on whole test videos as ``jobs/coarse_fine.py`` scores them (:mod:`pipelines.eval.detection`:
frames at the stride, chunks of T' steps, the Coarse stream over the whole chunk, the Fine stream the
chunk with offset 0): 25-point MAP (the official protocol) and every-frame mAP (the ablation
protocol), in %. GMACs are counted (``torch.utils.flop_counter``/2) per T'-step clip at the bench
size, and the paper-size table (128 frames, 224², X3D-M, :func:`vidmodels.summary.coarse_fine_rows`)
is added. No Ray: the figures measure the method, not the data plane.

The claims (spec §D, E3, E4), each a comparison of means over seeds with the ratio: Coarse-Fine >=
Fine-Fine at lower GMACs; both > X3D (and > X3D trained as long); grid >= stride > avg, max in a
Coarse-only network; CTHW > C fusion. Prints one JSON object. Usage::

    python bench/coarse_fine_claims.py             # 3 seeds: ~720 CPU-s, ~6-10 min on 2 idle cores
    python bench/coarse_fine_claims.py --quick     # smoke size (tests)
    python bench/coarse_fine_claims.py --seeds 0,1 --set steps1=60
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PhaseTimer, envelope, load1, log, machine_info, run_seeds  # noqa: E402
from pipelines.data import recipes, sampling  # noqa: E402
from pipelines.data.normalize import normalize_video  # noqa: E402
from pipelines.eval.detection import DetectionEval, VideoResult, detection_metrics, video_scores  # noqa: E402
from pipelines.methods.coarse_fine import CoarseFineBackbone, CoarseFineDetector, init_from_stage1  # noqa: E402
from pipelines.prep import synthetic  # noqa: E402


@dataclasses.dataclass
class BenchConfig:
    """Sizes of one run (defaults: the run in bench/RESULTS.md)."""

    classes: int = 6
    train_videos: int = 12
    test_videos: int = 6
    seconds: tuple[float, float] = (4.0, 6.0)
    size: int = 64
    stride: int = 4
    clip_len: int = 16  # T, Coarse (and X3D) training clips
    fine_len: int = 32  # T', the Fine stream (the whole video at 25 fps and stride 4 up to 5 s)
    steps1: int = 30
    steps2: int = 20
    batch: int = 4
    lr: float = 1e-3
    fusion_lr_mult: float = 10.0
    freeze_fine: bool = True
    drop_rate: float = 0.2
    paper_table: bool = True
    seeds: tuple[int, ...] = (0, 1, 2)


def quick() -> BenchConfig:
    return BenchConfig(classes=3, train_videos=2, test_videos=1, seconds=(2.5, 2.5), clip_len=8, fine_len=8,
                       steps1=1, steps2=1, batch=2, paper_table=False, seeds=(0,))


STAGE1 = {"x3d": ("x3d", "grid"), "grid": ("coarse_only", "grid"), "stride": ("coarse_only", "stride"),
          "avg": ("coarse_only", "avg"), "max": ("coarse_only", "max")}
STAGE2 = {"coarse_fine": ("coarse_fine", "CTHW"), "coarse_fine_C": ("coarse_fine", "C"),
          "fine_fine": ("fine_fine", "CTHW")}


# ----------------------------------------------------------------------------- data


def render(cfg: BenchConfig) -> dict:
    """Multi-action videos in memory (``size``² at 25 fps) with manifest-style rows, split train/test."""
    sc = synthetic.SyntheticConfig(num_classes=cfg.classes, height=cfg.size, width=cfg.size, groups=1,
                                   multi_videos=cfg.train_videos + cfg.test_videos, multi_seconds=cfg.seconds)
    frames, rows = [], []
    for i in range(sc.multi_videos):
        video, segments = synthetic.render_multi_action(synthetic._multi_rng(sc, i), sc)
        segs = [{"label_index": s.cls_idx, "start_s": s.start / sc.fps, "end_s": s.end / sc.fps} for s in segments]
        frames.append(video)
        rows.append({"video_id": str(i), "uri": "memory", "num_frames": len(video), "fps": sc.fps,
                     "duration_s": len(video) / sc.fps, "segments": json.dumps(segs), "segment_list": segs})
    return {"frames": frames, "rows": rows, "train": np.arange(cfg.train_videos),
            "test": np.arange(cfg.train_videos, len(rows))}


def stage_recipe(cfg: BenchConfig, fused: bool) -> recipes.RecipeConfig:
    common = [f"clip_len={cfg.clip_len}", f"stride={cfg.stride}", f"augment.out_size={cfg.size}", "augment.flip_p=0"]
    if fused:
        return recipes.recipe("coarse_fine", debug_size=True, overrides=common + [f"fine_len={cfg.fine_len}"])
    return recipes.recipe("activity", debug_size=True, overrides=common)


def sample_batch(data: dict, videos: np.ndarray, rc, rng: np.random.Generator, num_classes: int) -> dict:
    """One training batch through the recipe's ``sample`` (one read per video), normalised as the loop does."""
    def read(video_id, uri, idx):
        return data["frames"][int(video_id)][idx]

    samples = [rc.sample(data["rows"][v], rng, read, num_classes) for v in videos]
    batch = {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0] if k != "aug_caption"}
    for col, kind in rc.video_columns().items():
        batch[col] = normalize_video(batch[col], kind)
    return batch


# ----------------------------------------------------------------------------- arms


def new_model(cfg: BenchConfig, mode: str, pool: str = "grid", fusion_dims: str = "CTHW") -> CoarseFineDetector:
    backbone = CoarseFineBackbone(num_classes=cfg.classes, arch="x3d_debug", mode=mode, pool=pool,
                                  fusion_dims=fusion_dims, drop_rate=cfg.drop_rate, fine_frames=cfg.fine_len,
                                  freeze_fine=cfg.freeze_fine and mode in ("coarse_fine", "fine_fine"))
    return CoarseFineDetector(backbone, fusion_lr_mult=cfg.fusion_lr_mult)


def train(model: CoarseFineDetector, data: dict, cfg: BenchConfig, steps: int, seed: int) -> float:
    """``steps`` Adam steps (fusion layers at their LR multiple); returns the mean loss of the last quarter."""
    groups = [{"params": g["params"], "lr": cfg.lr * g["lr_mult"]} for g in model.param_groups()]
    opt = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=5e-5)
    rc, rng = stage_recipe(cfg, model.backbone.net.fusion is not None), np.random.default_rng(seed)
    model.train()
    losses = []
    for _ in range(steps):
        batch = sample_batch(data, rng.choice(data["train"], cfg.batch, replace=False), rc, rng, cfg.classes)
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    return float(np.mean(losses[-max(1, steps // 4):]))


@torch.no_grad()
def score(model: CoarseFineDetector, data: dict, cfg: BenchConfig) -> dict[str, float]:
    """Whole test videos through ``frame_logits`` (chunks of T' steps): MAP25, WAP25, every-frame mAP (%)."""
    model.eval()
    ev = DetectionEval("memory", "test", cfg.classes, stride=cfg.stride, crop_size=cfg.size, max_steps=cfg.fine_len)
    results = []
    for v in data["test"]:
        row, video = data["rows"][v], data["frames"][v]
        probs = video_scores([model.frame_logits], video[::cfg.stride], row["num_frames"], ev, torch.device("cpu"))
        labels = sampling.segment_labels(np.arange(row["num_frames"]), row["fps"], row["segment_list"],
                                         num_classes=cfg.classes)
        results.append(VideoResult(row["video_id"], probs, labels, row["fps"], row["duration_s"], row["segment_list"]))
    m = detection_metrics(results, ev)
    return {k: round(float(m[k]), 3) for k in ("map25", "wap25", "frame_map")}


def gmacs(cfg: BenchConfig, mode: str, pool: str = "grid", fusion_dims: str = "CTHW") -> float:
    """Counted GMACs of one T'-step clip at the bench size (meta device, FLOPs / 2)."""
    with torch.device("meta"):
        model = new_model(cfg, mode, pool, fusion_dims).eval()
        x_BCTHW = torch.empty(1, 3, cfg.fine_len, cfg.size, cfg.size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.frame_logits(x_BCTHW)
    return round(counter.get_total_flops() / 2e9, 4)


def run_seed(data: dict, cfg: BenchConfig, seed: int, timer: PhaseTimer) -> dict[str, dict]:
    rows, models = {}, {}
    for arm, (mode, pool) in STAGE1.items():
        torch.manual_seed(seed)  # every stage-1 arm starts from the same X3D weights
        models[arm] = model = new_model(cfg, mode, pool)
        loss = timer(f"seed {seed} {arm}", lambda m=model: train(m, data, cfg, cfg.steps1, seed))
        rows[arm] = {**score(model, data, cfg), "train_loss": round(loss, 4)}
        log(f"seed {seed} {arm}: {json.dumps(rows[arm])}")
    stage1 = {arm: {k.removeprefix("net."): v for k, v in m.backbone.state_dict().items()} for arm, m in models.items()}
    for arm, (mode, dims) in STAGE2.items():
        torch.manual_seed(seed + 1000)  # the new fusion layers
        model = new_model(cfg, mode, "grid", dims)
        init_from_stage1(model.backbone.net, {"fine": stage1["x3d"], **({"coarse": stage1["grid"]}
                                                                          if mode == "coarse_fine" else {})})
        loss = timer(f"seed {seed} {arm}", lambda m=model: train(m, data, cfg, cfg.steps2, seed + 1))
        rows[arm] = {**score(model, data, cfg), "train_loss": round(loss, 4)}
        log(f"seed {seed} {arm}: {json.dumps(rows[arm])}")
    loss = timer(f"seed {seed} x3d_long", lambda: train(models["x3d"], data, cfg, cfg.steps2, seed + 1))
    rows["x3d_long"] = {**score(models["x3d"], data, cfg), "train_loss": round(loss, 4)}
    return rows


CLAIMS = [  # (claim, arm, baseline arm, metric, at least): holds when mean(arm) > (>= if at least) mean(baseline)
    ("Coarse-Fine >= Fine-Fine (MAP25)", "coarse_fine", "fine_fine", "map25", True),
    ("Coarse-Fine >= Fine-Fine (frame mAP)", "coarse_fine", "fine_fine", "frame_map", True),
    ("Coarse-Fine > X3D (MAP25)", "coarse_fine", "x3d", "map25", False),
    ("Coarse-Fine > X3D (frame mAP)", "coarse_fine", "x3d", "frame_map", False),
    ("Coarse-Fine > X3D trained as long (frame mAP)", "coarse_fine", "x3d_long", "frame_map", False),
    ("Fine-Fine > X3D (MAP25)", "fine_fine", "x3d", "map25", False),
    ("Fine-Fine > X3D (frame mAP)", "fine_fine", "x3d", "frame_map", False),
    ("Fine-Fine > X3D trained as long (frame mAP)", "fine_fine", "x3d_long", "frame_map", False),
    ("Coarse-only: grid >= stride (frame mAP)", "grid", "stride", "frame_map", True),
    ("Coarse-only: stride > avg (frame mAP)", "stride", "avg", "frame_map", False),
    ("Coarse-only: stride > max (frame mAP)", "stride", "max", "frame_map", False),
    ("Coarse-only: grid > avg (frame mAP)", "grid", "avg", "frame_map", False),
    ("fusion over CTHW > over C (frame mAP)", "coarse_fine", "coarse_fine_C", "frame_map", False),
    ("fusion over CTHW > over C (MAP25)", "coarse_fine", "coarse_fine_C", "map25", False),
]


def _holds(value: float, baseline: float, at_least: bool) -> bool:
    return bool(value >= baseline if at_least else value > baseline)


def summarise(per_seed: list[dict[str, dict]]) -> tuple[dict, list[dict]]:
    arms = {arm: {m: {"mean": round(float(np.mean([s[arm][m] for s in per_seed])), 2),
                      "std": round(float(np.std([s[arm][m] for s in per_seed])), 2)} for m in per_seed[0][arm]}
            for arm in per_seed[0]}
    claims = []
    for name, arm, base, metric, at_least in CLAIMS:
        a, b = arms[arm][metric]["mean"], arms[base][metric]["mean"]
        claims.append({"claim": name, "value": a, "baseline": b, "ratio": round(a / b, 3) if b else None,
                       "holds": _holds(a, b, at_least),
                       "seeds_holding": sum(_holds(s[arm][metric], s[base][metric], at_least) for s in per_seed)})
    return arms, claims


def compute(cfg: BenchConfig) -> dict:
    """Counted GMACs per arm at the bench size, and (``paper_table``) the paper-size table."""
    arms = {arm: gmacs(cfg, mode, pool) for arm, (mode, pool) in STAGE1.items()}
    arms.update({arm: gmacs(cfg, mode, "grid", dims) for arm, (mode, dims) in STAGE2.items()})
    out = {"bench": {"frames": cfg.fine_len, "size": cfg.size, "arch": "x3d_debug", "gmacs": arms,
                     "coarse_fine_over_fine_fine": round(arms["coarse_fine"] / arms["fine_fine"], 3)}}
    if cfg.paper_table:
        from vidmodels.summary import CF_PAPER_GMACS, coarse_fine_rows

        rows = coarse_fine_rows()
        out["paper_size"] = {"frames": 128, "size": 224, "arch": "x3d_m", "rows": {
            name: {"gmacs_paper_accounted": round(r["paper"], 2), **({"gmacs_counted": round(r["total"], 2)}
                                                                     if "total" in r else {}),
                   "paper": CF_PAPER_GMACS.get(name.split(" ")[0])} for name, r in rows.items()},
            "coarse_fine_over_fine_fine": round(rows["coarse_fine"]["paper"] / rows["fine_fine"]["paper"], 3),
            "paper_ratio": 0.774}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke size (1 step per arm, 1 seed)")
    p.add_argument("--seeds", help="comma-separated seeds (default 0,1,2; quick: 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="BenchConfig field=value")
    p.add_argument("--budget-s", type=float, default=570.0,
                   help="start another seed only if the last seed's time still fits in this wall time")
    args = p.parse_args(argv)
    from pipelines.config import apply_overrides

    cfg = apply_overrides(quick() if args.quick else BenchConfig(), args.overrides)
    if args.seeds:
        cfg = dataclasses.replace(cfg, seeds=tuple(int(s) for s in args.seeds.split(",")))
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    started, load_start, timer = time.time(), load1(), PhaseTimer()
    data = timer("render", lambda: render(cfg))
    flops = timer("count GMACs", lambda: compute(cfg))
    per_seed, skipped = run_seeds(cfg.seeds, lambda seed: run_seed(data, cfg, seed, timer), started=started,
                                  budget_s=args.budget_s)
    arms, claims = summarise(per_seed)
    report = {"config": dataclasses.asdict(cfg), "videos": {"train": len(data["train"]), "test": len(data["test"]),
                                                             "frames": [r["num_frames"] for r in data["rows"]]},
              "seeds_skipped_for_budget": skipped, "arms": arms, "gmacs": flops, "claims": claims,
              "per_seed": per_seed, "phases": timer.phases}
    print(json.dumps(envelope("coarse_fine_claims", " ".join(sys.argv), "quick" if args.quick else "default", report,
                              machine=machine_info(), load_start=load_start, started=started)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
