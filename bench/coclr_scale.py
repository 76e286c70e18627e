"""How far CoCLR gets on the demo data when the data pipeline is taken out of the way.

``make demo`` trains each phase for 2-3 epochs through Ray Data, which on 2 cores is the
bottleneck. This benchmark materialises ``--data-epochs`` epochs of the demo's ``coclr``
samples once (the same recipe and overrides as ``jobs/coclr.py --variant demo``), then runs
the CoCLR schedule in this process from memory, cycling through those samples, so the
schedule can be many times longer in the same wall time. After every phase it scores the
trained encoder with the demo's protocols (retrieval R@1/R@5 and linear probe; flow
encoders on flow views) and, for CoCLR phases, the share of mined positives that have the
query's class. It also trains a supervised classifier per stream on the same samples: the
ceiling of what the encoder and clip size can learn in that many steps.

Prints one JSON object. Usage::

    python bench/coclr_scale.py --manifest data/demo/ucf101 --passes 4      # needs make demo's data
    python bench/coclr_scale.py --quick                                      # 1 pass per phase
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_info  # noqa: E402
from pipelines.data import recipes  # noqa: E402
from pipelines.cluster import init_ray  # noqa: E402
from pipelines.methods.coclr import demo  # noqa: E402
from pipelines.data.dataset import LoaderOptions, build_dataset  # noqa: E402
from pipelines.eval.protocols import EvalConfig, build_from_state, run_protocols  # noqa: E402
from pipelines.data.normalize import normalize_batch  # noqa: E402
from vidmodels.methods import CoCLR, coclr_schedule  # noqa: E402
from vidmodels.methods.coclr import CoCLRPhase  # noqa: E402
from vidmodels.methods.coclr import IN_CHANS  # noqa: E402
from vidmodels.registry import create_backbone  # noqa: E402

COLUMNS = ("rgb_0", "rgb_1", "flow_0", "flow_1", "vid_index", "label_index")
VIDEO_COLUMNS = {"rgb_0": "rgb", "rgb_1": "rgb", "flow_0": "flow", "flow_1": "flow"}


def materialise(manifest: str, epochs: int, seed: int) -> dict[str, np.ndarray]:
    """``epochs`` epochs of the demo variant's ``coclr`` samples, stacked in memory."""
    job = demo()
    cfg = recipes.recipe("coclr", debug_size=job.data.debug_size, overrides=job.data.recipe_overrides)
    parts = []
    for epoch in range(epochs):
        ds = build_dataset(manifest, cfg, "train", seed=seed, epoch=epoch, options=LoaderOptions(strings=False))
        parts += list(ds.select_columns(list(COLUMNS)).iter_batches(batch_size=None, batch_format="numpy"))
    return {k: np.concatenate([p[k] for p in parts]) for k in COLUMNS}


def batches(data: dict[str, np.ndarray], batch_size: int, gen: torch.Generator):
    """One pass over the materialised samples in a random order, normalised as the train loop does."""
    n = len(data["vid_index"])
    order = torch.randperm(n, generator=gen).numpy()
    for s in range(n // batch_size):
        idx = np.sort(order[s * batch_size:(s + 1) * batch_size])
        yield normalize_batch({k: torch.from_numpy(data[k][idx]) for k in COLUMNS}, VIDEO_COLUMNS, torch.device("cpu"))


def score(manifest: str, backbone: str, modality: str, state: dict | None) -> dict[str, float]:
    """The demo's evaluation (2 windows x 1 crop, retrieval + linear probe) of one encoder."""
    kwargs = {"num_classes": 0, "in_chans": IN_CHANS[modality]}
    cfg = EvalConfig(manifest=manifest, debug_size=True, num_clips=2, spatial_crops=1, modality=modality)
    r = run_protocols(functools.partial(build_from_state, backbone, kwargs, state, 0), ["retrieval", "linear"], cfg)
    return {"R@1": round(r["retrieval"]["R@1"], 2), "R@5": round(r["retrieval"]["R@5"], 2),
            "linear_top1": round(r["linear"]["top1"], 2)}


def run_schedule(data, manifest: str, passes: int, batch_size: int, seed: int) -> list[dict]:
    """The demo's schedule (one cycle), each phase ``passes`` passes over the samples, then
    ``infonce_rgb_continued``: InfoNCE-RGB trained on for as many steps as ``coclr_rgb_c1``
    took, so CoCLR-RGB is also compared with InfoNCE at an equal number of RGB steps."""
    job = demo()
    phases = coclr_schedule(cycles=1, init_epochs=passes, epochs_per_network=passes)
    phases.append(CoCLRPhase("infonce_rgb_continued", "infonce", "rgb", passes, {"rgb": "infonce_rgb"}))
    states: dict[str, dict] = {}  # phase name -> encoder state of its trained modality
    out = []
    for phase in phases:
        torch.manual_seed(seed)
        cfg = dataclasses.replace(job.method, modality=phase.modality, stage=phase.stage)
        method = CoCLR(cfg)
        for modality, source in phase.init_from.items():
            method.load_encoder_state(modality, states[source])
        opt = torch.optim.Adam(method.trainable_parameters(), lr=job.optim.lr, weight_decay=job.optim.weight_decay)
        method.train()
        gen, t0, logs = torch.Generator().manual_seed(seed), time.perf_counter(), []
        for _ in range(phase.epochs):
            for batch in batches(data, batch_size, gen):
                res = method(batch)
                opt.zero_grad(set_to_none=True)
                res["loss"].backward()
                opt.step()
                logs.append({k: float(v.detach()) for k, v in res.items()})
        states[phase.name] = method.encoder_state(phase.modality)
        last = logs[-len(logs) // max(1, phase.epochs):]  # the last pass
        mined = [r["mined_precision"] for r in last if "mined_precision" in r]
        row = {"phase": phase.name, "steps": len(logs), "seconds": round(time.perf_counter() - t0, 1),
               "last_pass_loss": round(float(np.mean([r["loss"] for r in last])), 3),
               "last_pass_top1": round(float(np.mean([r["top1"] for r in last])), 3),
               "mined_precision": round(float(np.mean(mined)), 3) if mined else None,
               **score(manifest, cfg.backbone, phase.modality, method.encoder_state(phase.modality, with_head=False))}
        print(json.dumps(row), file=sys.stderr, flush=True)
        out.append(row)
    return out


def supervised(data, manifest: str, modality: str, passes: int, batch_size: int, seed: int) -> dict:
    """Cross-entropy on clip ``_0`` with the labels: the ceiling for this encoder, clip size and step count."""
    torch.manual_seed(seed)
    backbone = demo().method.backbone
    model = create_backbone(backbone, num_classes=int(data["label_index"].max()) + 1, in_chans=IN_CHANS[modality])
    opt = torch.optim.Adam(model.parameters(), lr=demo().optim.lr)
    gen, steps = torch.Generator().manual_seed(seed), 0
    model.train()
    for _ in range(passes):
        for batch in batches(data, batch_size, gen):
            x = batch[f"{modality}_0"][:, :IN_CHANS[modality]]
            loss = F.cross_entropy(model(x), batch["label_index"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    model.reset_classifier(0)
    return {"modality": modality, "steps": steps, **score(manifest, backbone, modality, model.state_dict())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", default="data/demo/ucf101", help="the demo's ingested dataset (with flow)")
    p.add_argument("--data-epochs", type=int, default=4, help="epochs of augmented samples to materialise")
    p.add_argument("--passes", type=int, default=4, help="passes over the samples per phase")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="1 data epoch, 1 pass")
    args = p.parse_args(argv)
    if args.quick:
        args.data_epochs, args.passes = 1, 1
    torch.set_num_threads(max(1, torch.get_num_threads()))
    init_ray()
    t0 = time.perf_counter()
    data = materialise(args.manifest, args.data_epochs, args.seed)
    load_s = time.perf_counter() - t0
    random = {m: score(args.manifest, demo().method.backbone, m, None) for m in ("rgb", "flow")}
    result = {
        "benchmark": "coclr_scale", "machine": machine_info(), "manifest": args.manifest,
        "samples": int(len(data["vid_index"])), "data_epochs": args.data_epochs, "passes_per_phase": args.passes,
        "epochs_per_phase": args.passes * args.data_epochs, "batch_size": args.batch_size, "seed": args.seed,
        "materialise_s": round(load_s, 1), "random_init": random,
        "phases": run_schedule(data, args.manifest, args.passes, args.batch_size, args.seed),
        "supervised": [supervised(data, args.manifest, m, args.passes, args.batch_size, args.seed)
                       for m in ("rgb", "flow")],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
