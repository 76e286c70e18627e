"""Seed 000's detection-pretraining claims (spec §D E1, Table 4.2a / 4.4e) at CPU scale, in memory.

Renders single-action synthetic clips (pretraining) and multi-action videos (finetuning and a
held-out test split, by index) in memory, then for each seed pretrains, from the same initial
X3D (``x3d_debug``, 64 px, 8 frames at stride 2), one model per arm for the same number of steps
on the same clip sequence (``detection`` recipe samples, video label copied to every frame):

* ``cls``: classification pretraining (objective ``clip``), the baseline;
* ``freeze`` / ``mixup`` / ``cutmix``: per-frame BCE on clips edited by that one volume
  augmentation (:func:`pipelines.data.volume_aug.volume_augment_batch`, policy = the op);
* ``joint``: all three, each with p = .5 per clip (the authors' code).

Every pretrained backbone (its K-way classifier dropped, as the seed's new fc2) and the random
initialisation (``none``, a floor) is finetuned identically: same steps, same classifier
initialisation, same window sequence of the ``activity`` recipe, ``L = ½ L_cls + ½ L_loc``.
``ensemble`` scores the mean of the sigmoids of the finetuned freeze, mixup and cutmix models.
Test: every held-out video whole, one centre view at the stride, logits interpolated to every
frame (:mod:`pipelines.eval.detection`): 25-point MAP / WAP, every-frame mAP / WAP, and every-frame
mAP on frames with one label vs more than one.

Claims (each a comparison of means over seeds, with how many seeds hold): every detection arm
> cls on MAP25, WAP25 and frame mAP; the ensemble > every other pretrained arm; and the gain over
cls is larger on multi-label frames than on single-label frames. No Ray. Prints one JSON object;
progress on stderr. Usage::

    python bench/detection_claims.py                  # 3 seeds, ~510 s of CPU (~8.5 min on a free core)
    python bench/detection_claims.py --set pretrain_steps=600 --budget-s 5400  # ~21 min of CPU
    python bench/detection_claims.py --quick          # smoke size (tests)

Sizes, measured on the shared 2-core machine:

* Threads: one. At load ~5 a batch-8 step of x3d_debug took 0.10 s with one intra-op thread and
  0.6-0.8 s with two (two threads spin against the other users' processes). A step with its data
  costs ~0.125 s of CPU, so a seed (5 x 200 pretraining + 6 x 60 finetuning steps) is ~170 s of
  CPU; the wall time grows with the load.
* Classes: the 4 translations. With the 6 first classes (adding the two rotations) classification
  pretraining stayed at chance loss (ln 6) for 200 steps at clutter 0 and 1; with the 4 it fell
  from 1.39 to 0.75 (top-1 62 %) within 400 steps at clutter 0.
* No flips (``augment.flip_p=0``) and CutMix in ``window`` mode: the classes are directions of
  motion, so a flip turns MoveLeft into MoveRight, and Transient View's sweep
  (:func:`~pipelines.data.volume_aug.view_translation`) adds a horizontal pan to both clips.
  The seed's real actions are invariant to both; here they change the label.
* Adam 3e-3 (wd 1e-5) without dropout for both phases (the seed: SGD, dropout .5, 100k steps;
  dropout is left out because a few hundred steps are far from the overfitting it guards
  against, not measured). Pretraining : finetuning steps 200 : 60 by default, so that 3 seeds fit
  ~10 min of CPU; bench/RESULTS.md shows that pretraining has barely started at 200 steps and
  that the arms separate at 600.

Legend: B batch, T frames, H/W height/width, K classes, N frames of a video.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PhaseTimer, envelope, load1, log, machine_info, run_seeds  # noqa: E402
from pipelines.data import augment, recipes, sampling  # noqa: E402
from pipelines.data.normalize import normalize_video  # noqa: E402
from pipelines.data.volume_aug import VolumeAugConfig, volume_augment_batch  # noqa: E402
from pipelines.eval.detection import DetectionEval, VideoResult, detection_metrics, video_scores  # noqa: E402
from pipelines.prep import synthetic  # noqa: E402
from vidmodels.methods.detection import DetectionConfig, FrameDetector  # noqa: E402

METRICS = ("map25", "wap25", "frame_map", "frame_wap", "single_map", "multi_map")


@dataclasses.dataclass
class BenchConfig:
    """Sizes of one run (defaults: the run in bench/RESULTS.md)."""

    classes: int = 4  # MoveLeft, MoveRight, MoveUp, MoveDown (see "Sizes" in the module docstring)
    groups: int = 4
    clips: int = 3
    clip_frames: int = 32
    size: int = 80  # rendered; the recipe's short side 73-91 then a 64 px crop, as X3D's 256-320 -> 224
    videos: int = 48
    test_videos: int = 16
    video_seconds: tuple[float, float] = (4.0, 6.0)
    clutter: float = 0.0  # static background shapes (synthetic.SyntheticConfig.clutter)
    cutmix_mode: str = "window"  # not "view": its sweep adds a pan, which is a class here (module docstring)
    pretrain_steps: int = 200
    finetune_steps: int = 60
    batch: int = 8
    lr: float = 3e-3
    dropout: float = 0.0
    seeds: tuple[int, ...] = (0, 1, 2)


def quick() -> BenchConfig:
    return BenchConfig(classes=3, groups=2, clips=2, videos=8, test_videos=4, pretrain_steps=2, finetune_steps=2,
                       batch=4, seeds=(0,))


# ----------------------------------------------------------------------------- data


def render(cfg: BenchConfig) -> dict:
    """Single-action clips ``(N, T, H, W, 3)`` with labels, and multi-action videos with manifest-like rows.

    Segment times are written as the Charades ingest reads them (``round(frame / fps, 2)`` seconds,
    :func:`pipelines.prep.synthetic._charades_row`) and ``duration_s`` is frames / fps, as the probe.

    Raises:
        ValueError: when the test videos lack frames with one label or with more than one.
    """
    sc = synthetic.SyntheticConfig(num_classes=cfg.classes, groups=cfg.groups, clips_per_group=cfg.clips,
                                   frames=cfg.clip_frames, height=cfg.size, width=cfg.size,
                                   multi_videos=cfg.videos, multi_seconds=tuple(cfg.video_seconds),
                                   clutter=cfg.clutter)
    clips, labels = [], []
    for g in range(1, cfg.groups + 1):
        canvas = synthetic.make_background(synthetic._group_rng(sc, g), sc)
        for c in range(cfg.classes):
            for k in range(1, cfg.clips + 1):
                clips.append(synthetic.render_clip(c, synthetic._clip_rng(sc, c, g, k), sc, canvas_HW3=canvas))
                labels.append(c)
    videos, rows = [], []
    for i in range(cfg.videos):
        frames, segments = synthetic.render_multi_action(synthetic._multi_rng(sc, i), sc)
        videos.append(frames)
        rows.append({"video_id": f"v{i:03d}", "uri": str(i), "num_frames": len(frames), "fps": sc.fps,
                     "duration_s": len(frames) / sc.fps, "segments": json.dumps(
                         [{"label_index": s.cls_idx, "start_s": round(s.start / sc.fps, 2),
                           "end_s": round(s.end / sc.fps, 2)} for s in segments])})
    data = {"clips": np.stack(clips), "clip_label": np.array(labels), "videos": videos, "rows": rows,
            "train": np.arange(cfg.videos - cfg.test_videos), "test": np.arange(cfg.videos - cfg.test_videos,
                                                                                cfg.videos)}
    data["test_frames"] = label_counts(data, cfg)
    if not data["test_frames"]["one_label"] or not data["test_frames"]["more_labels"]:
        raise ValueError(f"test videos need frames with 1 and >1 labels, got {data['test_frames']}: raise videos")
    return data


def frame_labels(row: dict, num_classes: int) -> np.ndarray:
    """Every frame's multi-hot labels ``(N, K)``, inclusive ends (the official scorer)."""
    return sampling.segment_labels(np.arange(row["num_frames"]), row["fps"], json.loads(row["segments"]),
                                   num_classes=num_classes)


def label_counts(data: dict, cfg: BenchConfig) -> dict[str, float]:
    """Test frames by label count, and the frame mAP of random scores (each class' share of positives)."""
    y_NK = np.concatenate([frame_labels(data["rows"][v], cfg.classes) for v in data["test"]])
    count_N, positives_K = y_NK.sum(1), y_NK.mean(0)
    return {"frames": len(count_N), "background": int((count_N == 0).sum()),
            "one_label": int((count_N == 1).sum()), "more_labels": int((count_N > 1).sum()),
            "chance_frame_map": round(100 * float(positives_K[positives_K > 0].mean()), 2)}


def recipe(name: str) -> recipes.RecipeConfig:
    """The recipe at debug size (8 frames at stride 2, 64 px) without flips: a flip turns MoveLeft into MoveRight."""
    return recipes.recipe(name, debug_size=True, overrides=["augment.flip_p=0"])


def to_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The train loop's normalisation: ImageNet-normalised ``(B, 3, T, H, W)`` and float label columns."""
    out = {k: torch.from_numpy(np.asarray(batch[k], np.float32)) for k in ("frame_labels", "frame_valid")
           if k in batch}
    return {"rgb": normalize_video(torch.from_numpy(np.ascontiguousarray(batch["rgb"])), "rgb"), **out}


def pretrain_batch(data: dict, cfg: BenchConfig, rc, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``detection`` recipe samples of random clips: ``rgb`` uint8 ``(B, T, 64, 64, 3)``, labels ``(B, T, K)``."""
    out = []
    for n in rng.choice(len(data["clips"]), cfg.batch, replace=False):
        row = {"video_id": str(n), "uri": "", "num_frames": cfg.clip_frames, "fps": 25.0, "segments": "[]",
               "label_index": int(data["clip_label"][n])}
        out.append(rc.sample(row, rng, lambda _id, _uri, idx, n=n: data["clips"][n][idx], cfg.classes))
    return {k: np.stack([s[k] for s in out]) for k in ("rgb", "frame_labels")}


def finetune_batch(data: dict, cfg: BenchConfig, rc, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``activity`` recipe windows of random training videos, labels on every raw frame spanned."""
    out = []
    for v in rng.choice(data["train"], cfg.batch, replace=False):
        out.append(rc.sample(data["rows"][v], rng, lambda _id, _uri, idx, v=v: data["videos"][v][idx], cfg.classes))
    return {k: np.stack([s[k] for s in out]) for k in ("rgb", "frame_labels", "frame_valid")}


# ----------------------------------------------------------------------------- training and scoring

ARMS = {  # name: (pretraining objective, volume augmentation policy); None: no pretraining (random init)
    "none": None,
    "cls": ("clip", None),
    "freeze": ("frames", "freeze"),
    "mixup": ("frames", "mixup"),
    "cutmix": ("frames", "cutmix"),
    "joint": ("frames", "joint"),
}
ENSEMBLE = ("freeze", "mixup", "cutmix")
DETECTION_ARMS = ("freeze", "mixup", "cutmix", "joint", "ensemble")


def train(model: FrameDetector, steps: int, lr: float, make_batch) -> float:
    """Adam steps on ``make_batch(step)``; returns the mean loss of the last quarter."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    model.train()
    losses = []
    for step in range(steps):
        out = model(to_torch(make_batch(step)))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    return float(np.mean(losses[-max(1, steps // 4):]))


def pretrain(data: dict, cfg: BenchConfig, arm: str, init: dict, seed: int) -> tuple[dict, float]:
    """One arm's pretraining from ``init``; the clip sequence (and crops) is the same for every arm."""
    objective, policy = ARMS[arm]
    torch.manual_seed(seed)
    model = FrameDetector(DetectionConfig(backbone="x3d_debug", num_classes=cfg.classes, objective=objective,
                                          dropout=cfg.dropout))
    model.backbone.load_state_dict(init)
    rc, rng = recipe("detection"), np.random.default_rng([seed, 1])
    volume = VolumeAugConfig(policy=policy, cutmix_mode=cfg.cutmix_mode) if policy else None

    def make_batch(step: int) -> dict[str, np.ndarray]:
        batch = pretrain_batch(data, cfg, rc, rng)
        return volume_augment_batch(batch, cfg=volume, seed=seed, epoch=step) if volume else batch

    loss = train(model, cfg.pretrain_steps, cfg.lr, make_batch)
    return model.backbone.state_dict(), loss


def finetune(data: dict, cfg: BenchConfig, state: dict, seed: int) -> tuple[FrameDetector, float]:
    """The identical finetune: the pretrained backbone without its classifier, a new K-way classifier drawn
    from the same generator state for every arm, the same window sequence and dropout draws."""
    torch.manual_seed(1000 + seed)
    model = FrameDetector(DetectionConfig(backbone="x3d_debug", num_classes=cfg.classes, objective="localize",
                                          dropout=cfg.dropout))
    left = model.load_backbone_state({k: v for k, v in state.items() if not k.startswith("head.")})
    assert all(k.startswith("head.") for k in left), left  # only the new classifier (the seed's fc2)
    rc, rng = recipe("activity"), np.random.default_rng([seed, 2])
    loss = train(model, cfg.finetune_steps, cfg.lr, lambda _step: finetune_batch(data, cfg, rc, rng))
    return model.eval(), loss


def evaluate(data: dict, cfg: BenchConfig, models: list[FrameDetector]) -> dict[str, float]:
    """Whole held-out videos, one centre view at the stride; the models' sigmoids averaged (an ensemble)."""
    rc = recipe("activity")
    ev = DetectionEval(manifest="", split="test", num_classes=cfg.classes, stride=rc.stride, crop_size=rc.crop_size)
    results = []
    for v in data["test"]:
        row, frames = data["rows"][v], data["videos"][v][::rc.stride]
        clip = augment.apply_crop(frames, augment.center_crop_params(*frames.shape[1:3], out_size=ev.crop_size))
        scores = video_scores([m.frame_logits for m in models], clip, row["num_frames"], ev, torch.device("cpu"))
        results.append(VideoResult(row["video_id"], scores, frame_labels(row, cfg.classes), row["fps"],
                                   row["duration_s"], json.loads(row["segments"])))
    metrics = detection_metrics(results, ev)
    return {k: round(float(metrics[k]), 3) for k in METRICS}


def run_seed(data: dict, cfg: BenchConfig, seed: int, timer: PhaseTimer) -> dict[str, dict]:
    torch.manual_seed(seed)  # every arm starts from these weights
    init = FrameDetector(DetectionConfig(backbone="x3d_debug", num_classes=cfg.classes)).backbone.state_dict()
    rows, models = {}, {}
    for arm, spec in ARMS.items():
        state, row = init, {}
        if spec is not None:
            state, row["pretrain_loss"] = timer(f"seed {seed} pretrain {arm}",
                                                functools.partial(pretrain, data, cfg, arm, init, seed))
        models[arm], row["finetune_loss"] = timer(f"seed {seed} finetune {arm}",
                                                  functools.partial(finetune, data, cfg, state, seed))
        rows[arm] = {**evaluate(data, cfg, [models[arm]]), **row}
        log(f"seed {seed} {arm}: {json.dumps(rows[arm])}")
    rows["ensemble"] = evaluate(data, cfg, [models[a] for a in ENSEMBLE])
    log(f"seed {seed} ensemble: {json.dumps(rows['ensemble'])}")
    for arm in DETECTION_ARMS:  # Table 4.4e: gain over cls on frames with one label / more than one
        rows[arm].update({f"gain_{k}": round(rows[arm][f"{k}_map"] - rows["cls"][f"{k}_map"], 3)
                          for k in ("single", "multi")})
    return rows


# ----------------------------------------------------------------------------- claims

CLAIMS = [  # (claim, arm, baseline arm(s), metric): holds when mean(arm) > mean(baseline) (> the max of several);
    # a (metric, metric) pair compares two metrics of one arm (the gains over cls, which can be negative: no ratio)
    *[(f"{arm} > cls ({label})", arm, "cls", metric) for metric, label in
      (("map25", "MAP25"), ("wap25", "WAP25"), ("frame_map", "frame mAP")) for arm in DETECTION_ARMS],
    *[(f"ensemble best ({label})", "ensemble", ("cls", "freeze", "mixup", "cutmix", "joint"), metric)
      for metric, label in (("map25", "MAP25"), ("wap25", "WAP25"), ("frame_map", "frame mAP"))],
    *[(f"{arm}: gain over cls on >1-label frames > on 1-label frames", arm, arm, ("gain_multi", "gain_single"))
      for arm in DETECTION_ARMS],
]


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and population standard deviation, rounded to 2 decimals."""
    return {"mean": round(float(np.mean(values)), 2), "std": round(float(np.std(values)), 2)}


def summarise(per_seed: list[dict[str, dict]]) -> tuple[dict, list[dict]]:
    arms = {arm: {m: mean_std([s[arm][m] for s in per_seed]) for m in per_seed[0][arm]} for arm in per_seed[0]}
    claims = []
    for name, arm, base, metric in CLAIMS:
        m_arm, m_base = metric if isinstance(metric, tuple) else (metric, metric)
        bases = base if isinstance(base, tuple) else (base,)
        a = float(np.mean([s[arm][m_arm] for s in per_seed]))
        b = max(float(np.mean([s[x][m_base] for s in per_seed])) for x in bases)
        ratio = None if isinstance(metric, tuple) or not b else round(a / b, 3)
        seeds = sum(int(s[arm][m_arm] > max(s[x][m_base] for x in bases)) for s in per_seed)
        claims.append({"claim": name, "value": round(a, 2), "baseline": round(b, 2), "difference": round(a - b, 2),
                       "ratio": ratio, "holds": bool(a > b), "seeds_holding": seeds})
    return arms, claims


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke size (2 steps, 1 seed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="BenchConfig field=value")
    p.add_argument("--seeds", type=lambda s: tuple(int(x) for x in s.split(",")), help="e.g. 0,1,2 (overrides cfg)")
    p.add_argument("--budget-s", type=float, default=570.0,
                   help="start another seed only if the last seed's time still fits in this wall time")
    args = p.parse_args(argv)
    from pipelines.config import apply_overrides

    cfg = apply_overrides(quick() if args.quick else BenchConfig(), args.overrides)
    if args.seeds:
        cfg = dataclasses.replace(cfg, seeds=args.seeds)
    torch.set_num_threads(1)  # see the module docstring
    started, cpu_start, load_start, timer = time.time(), time.process_time(), load1(), PhaseTimer()
    data = timer("render", lambda: render(cfg))
    per_seed, skipped = run_seeds(cfg.seeds, lambda seed: run_seed(data, cfg, seed, timer), started=started,
                                  budget_s=args.budget_s)
    arms, claims = summarise(per_seed)
    report = {"config": dataclasses.asdict(cfg), "threads": torch.get_num_threads(),
              "videos": {"pretrain_clips": len(data["clips"]), "finetune": len(data["train"]),
                         "test": len(data["test"])}, "test_frames": data["test_frames"],
              "seeds_run": [s for s in cfg.seeds if s not in skipped], "seeds_skipped_for_budget": skipped,
              "arms": arms, "claims": claims, "per_seed": per_seed, "phases": timer.phases,
              "cpu_s": round(time.process_time() - cpu_start, 1)}
    print(json.dumps(envelope("detection_claims", " ".join(sys.argv), "quick" if args.quick else "default", report,
                              machine=machine_info(), load_start=load_start, started=started)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
