"""Seed 001's DPC / MemDPC orderings at CPU scale, on synthetic motion clips held in memory.

Renders a small synthetic set (classes defined by motion, backgrounds by group, train/test
split by group) and its Farneback flow in memory, then for each seed pretrains, from the
same initialisation, DPC (RGB, dense), DPC with pooled vectors ("remove Map"), MemDPC (RGB)
and DPC (flow), each for the same number of steps on samples of the ``dpc`` recipe
(``DPCRecipe.sample``: clip-wise crop, frame-wise jitter and grey). Every encoder, and the
random initialisation, is scored through its pooled context c_t (the ``dpc_context_tiny``
backbone in eval mode): retrieval R@1/R@5 (test queries train), linear and MLP probes
(:mod:`pipelines.eval.protocols`) on view-averaged features, and, for DPC-RGB and random
init, full finetuning for the same number of steps; the two-stream row fuses DPC-RGB and
DPC-flow late (:mod:`pipelines.eval.fusion`, as ``jobs/evaluate.py --fuse``). No Ray: the figures
measure the method, not the data plane.

The claims (spec §E.4), each a comparison of means over seeds, with the ratio:
DPC > random (finetune, retrieval); dense > vector; MemDPC >= DPC; flow > RGB; two-stream
> flow; and linear < MLP < finetune. Prints one JSON object. Usage::

    python bench/dpc_claims.py                     # 3 seeds x 20 steps per arm (~4 min on 2 cores)
    python bench/dpc_claims.py --set steps=100     # 100 steps; seeds that do not fit --budget-s are skipped
    python bench/dpc_claims.py --quick             # smoke size (tests)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PhaseTimer, envelope, load1, log, machine_info, run_seeds  # noqa: E402
from pipelines.data import recipes  # noqa: E402
from pipelines.data.normalize import normalize_video  # noqa: E402
from pipelines.eval.fusion import fused_probe, fused_retrieval  # noqa: E402
from pipelines.eval.protocols import Features, linear_probe, mlp_probe, retrieval_recall  # noqa: E402
from pipelines.prep import flow as flow_mod  # noqa: E402
from pipelines.prep import synthetic  # noqa: E402
from vidmodels.methods.dpc import DPCConfig, MemDPCConfig, build_dpc  # noqa: E402
from vidmodels.registry import create_backbone  # noqa: E402

IN_CHANS = {"rgb": 3, "flow": 2}


@dataclasses.dataclass
class BenchConfig:
    """Sizes of one run (defaults: the run in bench/RESULTS.md)."""

    classes: int = 6
    groups: int = 5
    clips: int = 3
    frames: int = 32
    size: int = 96
    blocks: int = 5
    block_len: int = 3
    stride: int = 2
    pred_step: int = 2
    memory_size: int = 128
    steps: int = 20
    batch: int = 8
    lr: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2)


def quick() -> BenchConfig:
    return BenchConfig(classes=3, groups=3, clips=2, frames=24, blocks=4, pred_step=1, memory_size=16, steps=2,
                       batch=4, seeds=(0,))


# ----------------------------------------------------------------------------- data


def render(cfg: BenchConfig) -> dict[str, np.ndarray]:
    """RGB and encoded flow of every clip, labels and a train/test split by group (UCF-style)."""
    sc = synthetic.SyntheticConfig(num_classes=cfg.classes, groups=cfg.groups, clips_per_group=cfg.clips,
                                   frames=cfg.frames, height=cfg.size, width=cfg.size, multi_videos=0)
    rgb, flow, labels, test = [], [], [], []
    for g in range(1, cfg.groups + 1):
        canvas = synthetic.make_background(synthetic._group_rng(sc, g), sc)
        for c in range(cfg.classes):
            for k in range(1, cfg.clips + 1):
                frames = synthetic.render_clip(c, synthetic._clip_rng(sc, c, g, k), sc, canvas_HW3=canvas)
                grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
                fields = flow_mod.compute_flow(grey, "farneback")
                rgb.append(frames)
                flow.append(flow_mod.encode_flow(flow_mod.align_to_frames(fields, len(frames))))
                labels.append(c)
                test.append(g in sc.test_groups)
    return {"rgb": np.stack(rgb), "flow": np.stack(flow), "label": np.array(labels), "test": np.array(test)}


def recipe(cfg: BenchConfig, modality: str, grey_p: float = 0.5) -> recipes.RecipeConfig:
    return recipes.recipe("dpc", overrides=[f"clip_len={cfg.block_len}", f"stride={cfg.stride}",
                                            f"num_blocks={cfg.blocks}", f"augment.out_size={cfg.size}",
                                            "augment.flip_p=0", f"augment.grey_p={grey_p}", f"modality={modality}"])


def sample_batch(data, videos: np.ndarray, rc, rng: np.random.Generator) -> torch.Tensor:
    """Augmented block sequences ``(B, N, C, L, S, S)``, normalised as the train loop does."""
    out = []
    for v in videos:
        row = {"video_id": str(v), "uri": "rgb", "flow_uri": "flow", "num_frames": data["rgb"].shape[1]}
        out.append(rc.sample(row, rng, lambda _id, uri, idx, v=v: data[uri][v][idx], None)["blocks"])
    x = normalize_video(torch.from_numpy(np.stack(out)), rc.modality)
    return x[:, :, : IN_CHANS[rc.modality]]


def eval_clips(data, cfg: BenchConfig, modality: str, videos: np.ndarray) -> torch.Tensor:
    """Two evenly spaced windows of ``blocks x block_len`` frames at the stride, full frame: ``(V*2, C, T, S, S)``."""
    span = (cfg.blocks * cfg.block_len - 1) * cfg.stride + 1
    starts = np.linspace(0, max(0, data["rgb"].shape[1] - span), 2).astype(int)
    idx = [(s + cfg.stride * np.arange(cfg.blocks * cfg.block_len)) % data["rgb"].shape[1] for s in starts]
    clips = np.stack([data[modality][v][i] for v in videos for i in idx])
    return normalize_video(torch.from_numpy(clips), modality)[:, : IN_CHANS[modality]]


# ----------------------------------------------------------------------------- training and scoring


def pretrain(data, cfg: BenchConfig, mcfg: DPCConfig, modality: str, seed: int,
             init: dict) -> tuple[dict, float, float]:
    """``cfg.steps`` Adam steps; returns the context state, the SSL top-1 (%) of the last quarter and its chance."""
    model = build_dpc(mcfg)
    model.context.load_state_dict(init)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=1e-5)
    rng, train = np.random.default_rng(seed), np.flatnonzero(~data["test"])
    rc = recipe(cfg, modality, 0.25 if isinstance(mcfg, MemDPCConfig) else 0.5)
    top1 = []
    for _ in range(cfg.steps):
        out = model({"blocks": sample_batch(data, rng.choice(train, cfg.batch, replace=False), rc, rng)})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        top1.append(float(out["top1"]))
    return model.context_state(), 100 * float(np.mean(top1[-max(1, cfg.steps // 4):])), 100 * float(out["chance"])


def context(cfg: BenchConfig, modality: str, dense: bool = True, num_classes: int = 0):
    return create_backbone("dpc_context_tiny", in_chans=IN_CHANS[modality], dense=dense, num_classes=num_classes,
                           drop_rate=0.5)


@torch.no_grad()
def features(data, cfg: BenchConfig, state: dict, modality: str, dense: bool) -> dict[str, Features]:
    net = context(cfg, modality, dense)
    net.load_state_dict(state)
    net.eval()
    out = {}
    for split, mask in (("train", ~data["test"]), ("test", data["test"])):
        videos = np.flatnonzero(mask)
        z = F.normalize(net(eval_clips(data, cfg, modality, videos)), dim=1).view(len(videos), 2, -1).mean(1)
        out[split] = Features([str(v) for v in videos], data["label"][videos], F.normalize(z, dim=1).numpy())
    return out


def finetune(data, cfg: BenchConfig, state: dict, seed: int) -> float:
    """Context + dropout + linear head trained end to end on RGB block samples; test top-1 (%)."""
    torch.manual_seed(seed)
    net = context(cfg, "rgb", num_classes=cfg.classes)
    missing = net.load_state_dict(state, strict=False).missing_keys
    assert all(k.startswith("head.") for k in missing), missing  # only the new head is not loaded
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=1e-3)  # seed 001 L428
    rng, train, rc = np.random.default_rng(100 + seed), np.flatnonzero(~data["test"]), recipe(cfg, "rgb")
    for _ in range(cfg.steps):
        videos = rng.choice(train, cfg.batch, replace=False)
        x_BNCLHW = sample_batch(data, videos, rc, rng)
        x_BCTHW = x_BNCLHW.permute(0, 2, 1, 3, 4, 5).flatten(2, 3)
        loss = F.cross_entropy(net(x_BCTHW), torch.from_numpy(data["label"][videos]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    test = np.flatnonzero(data["test"])
    with torch.no_grad():
        probs = net(eval_clips(data, cfg, "rgb", test)).softmax(1).view(len(test), 2, -1).mean(1)
    return float((probs.argmax(1).numpy() == data["label"][test]).mean() * 100)


def scores(f: dict[str, Features], cfg: BenchConfig) -> dict[str, float]:
    r = retrieval_recall(f["test"], f["train"], ks=(1, 5))
    return {"R@1": r["R@1"], "R@5": r["R@5"], "linear": linear_probe(f["train"], f["test"], cfg.classes)["top1"],
            "mlp": mlp_probe(f["train"], f["test"], cfg.classes)["top1"]}


def two_stream(streams: list[dict[str, Features]], cfg: BenchConfig) -> dict[str, float]:
    """Late fusion of the streams as ``jobs/evaluate.py --fuse`` (:mod:`pipelines.eval.fusion`)."""
    pairs = [(f["train"], f["test"]) for f in streams]
    r = fused_retrieval(pairs, ks=(1, 5))
    return {"R@1": r["R@1"], "R@5": r["R@5"],
            **{kind: fused_probe(pairs, cfg.classes, kind, epochs=300, seed=0)["top1"] for kind in ("linear", "mlp")}}


ARMS = {  # name: (modality, dense, config of the pretraining or None for the random initialisation)
    "random_rgb": ("rgb", True, None),
    "random_flow": ("flow", True, None),
    "dpc_rgb": ("rgb", True, "dpc"),
    "vector_rgb": ("rgb", False, "vector"),
    "memdpc_rgb": ("rgb", True, "memdpc"),
    "dpc_flow": ("flow", True, "dpc"),
}


def method_config(cfg: BenchConfig, kind: str, modality: str) -> DPCConfig:
    common = {"backbone": "dpc_context_tiny", "pred_step": cfg.pred_step, "in_chans": IN_CHANS[modality]}
    if kind == "memdpc":
        return MemDPCConfig(memory_size=cfg.memory_size, **common)
    return DPCConfig(dense=kind != "vector", **common)


def run_seed(data, cfg: BenchConfig, seed: int, timer: PhaseTimer) -> dict[str, dict]:
    rows, feats = {}, {}
    for arm, (modality, dense, kind) in ARMS.items():
        torch.manual_seed(seed)  # every arm of a modality starts from the same encoder
        init = context(cfg, modality).state_dict()
        row = {}
        if kind is not None:
            mcfg = method_config(cfg, kind, modality)
            init, row["ssl_top1"], row["ssl_chance"] = timer(f"seed {seed} {arm}", functools.partial(
                pretrain, data, cfg, mcfg, modality, seed, init))
        feats[arm] = features(data, cfg, init, modality, dense)
        row.update(scores(feats[arm], cfg))
        if arm in ("random_rgb", "dpc_rgb"):
            row["finetune"] = timer(f"seed {seed} finetune {arm}", functools.partial(finetune, data, cfg, init, seed))
        rows[arm] = row
        log(f"seed {seed} {arm}: {json.dumps({k: round(v, 3) for k, v in row.items()})}")
    rows["two_stream"] = two_stream([feats["dpc_rgb"], feats["dpc_flow"]], cfg)
    log(f"seed {seed} two_stream: {json.dumps({k: round(v, 3) for k, v in rows['two_stream'].items()})}")
    return rows


CLAIMS = [  # (claim, arm, baseline arm, metric): holds when mean(arm) > mean(baseline) (>= for MemDPC)
    ("DPC > random init (finetune)", "dpc_rgb", "random_rgb", "finetune"),
    ("DPC > random init (retrieval R@1)", "dpc_rgb", "random_rgb", "R@1"),
    ("DPC-flow > random flow encoder (retrieval R@1)", "dpc_flow", "random_flow", "R@1"),
    ("dense > vector (retrieval R@1)", "dpc_rgb", "vector_rgb", "R@1"),
    ("dense > vector (linear)", "dpc_rgb", "vector_rgb", "linear"),
    ("MemDPC >= DPC (retrieval R@1)", "memdpc_rgb", "dpc_rgb", "R@1"),
    ("MemDPC >= DPC (linear)", "memdpc_rgb", "dpc_rgb", "linear"),
    ("flow > RGB (retrieval R@1)", "dpc_flow", "dpc_rgb", "R@1"),
    ("flow > RGB (linear)", "dpc_flow", "dpc_rgb", "linear"),
    ("two-stream > flow (retrieval R@1)", "two_stream", "dpc_flow", "R@1"),
    ("two-stream > flow (linear)", "two_stream", "dpc_flow", "linear"),
    ("MLP > linear probe (DPC)", "dpc_rgb", "dpc_rgb", ("mlp", "linear")),
    ("finetune > MLP probe (DPC)", "dpc_rgb", "dpc_rgb", ("finetune", "mlp")),
]


def summarise(per_seed: list[dict[str, dict]]) -> tuple[dict, list[dict]]:
    arms = {arm: {m: {"mean": round(float(np.mean([s[arm][m] for s in per_seed])), 2),
                      "std": round(float(np.std([s[arm][m] for s in per_seed])), 2)} for m in per_seed[0][arm]}
            for arm in per_seed[0]}
    claims = []
    for name, arm, base, metric in CLAIMS:
        m_arm, m_base = metric if isinstance(metric, tuple) else (metric, metric)
        a, b = arms[arm][m_arm]["mean"], arms[base][m_base]["mean"]
        holds = a >= b if name.startswith("MemDPC") else a > b
        claims.append({"claim": name, "value": a, "baseline": b, "ratio": round(a / b, 3) if b else None,
                       "holds": bool(holds),
                       "seeds_holding": sum(int(s[arm][m_arm] >= s[base][m_base] if name.startswith("MemDPC")
                                                else s[arm][m_arm] > s[base][m_base]) for s in per_seed)})
    return arms, claims


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke size (2 steps, 1 seed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="BenchConfig field=value")
    p.add_argument("--budget-s", type=float, default=570.0,
                   help="start another seed only if the last seed's time still fits in this wall time")
    args = p.parse_args(argv)
    from pipelines.config import apply_overrides

    cfg = apply_overrides(quick() if args.quick else BenchConfig(), args.overrides)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    started, load_start, timer = time.time(), load1(), PhaseTimer()
    data = timer("render + flow", lambda: render(cfg))
    per_seed, skipped = run_seeds(cfg.seeds, lambda seed: run_seed(data, cfg, seed, timer), started=started,
                                  budget_s=args.budget_s)
    arms, claims = summarise(per_seed)
    report = {"config": dataclasses.asdict(cfg), "videos": {"train": int((~data["test"]).sum()),
                                                             "test": int(data["test"].sum())},
              "chance_top1": round(100 / cfg.classes, 2), "seeds_skipped_for_budget": skipped, "arms": arms,
              "claims": claims, "per_seed": per_seed, "phases": timer.phases}
    print(json.dumps(envelope("dpc_claims", " ".join(sys.argv), "quick" if args.quick else "default", report,
                              machine=machine_info(), load_start=load_start, started=started)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
