"""CoCLR's claims at demo scale over several seeds, with the data pipeline taken out of the way.

``make demo`` runs one seed of the CoCLR schedule through Ray Data. This benchmark decodes the
demo dataset (RGB and flow videos) into memory once, then draws every training sample with the
demo variant's own ``coclr`` recipe (same sampling, views and augmentation, fresh draws every
step) and every evaluation view with the ``eval`` recipe, in this process. Per seed it runs the
demo's schedule (InfoNCE RGB and flow, then one CoCLR cycle), ``infonce_rgb_continued`` (InfoNCE
RGB trained on for as many steps as CoCLR-RGB took: the equal-steps baseline) and a supervised
encoder per stream (the ceiling for this encoder, clip and step count), and scores every encoder
with the demo's protocols: retrieval R@1/R@5 (test videos query the train videos) and the linear
probe, on 2 windows x 1 crop. It reports each row as mean ± std over the seeds and checks
issue 10's targets:

* InfoNCE-flow above random-init flow (R@1 and linear);
* CoCLR-RGB above InfoNCE-RGB at equal RGB steps by more than one std (R@1 and linear);
* every trained encoder above random init of its modality (R@1 and linear).

Prints one JSON object. Usage::

    python bench/coclr_scale.py                                   # make demo's data, 3 seeds
    python bench/coclr_scale.py --seeds 0 --steps 20 --manifest data/debug/ucf101   # smoke
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
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import envelope, load1, log, machine_info, run_seeds  # noqa: E402
from pipelines.config import apply_overrides  # noqa: E402
from pipelines.data import recipes  # noqa: E402
from pipelines.data.normalize import normalize_batch  # noqa: E402
from pipelines.eval.protocols import Features, FeatureExtractor, build_from_state, linear_probe, retrieval_recall  # noqa: E402,E501
from pipelines.io.video import read_frames  # noqa: E402
from vidmodels.methods import CoCLR  # noqa: E402
from vidmodels.methods.coclr import IN_CHANS  # noqa: E402
from vidmodels.registry import create_backbone  # noqa: E402

VIDEO_COLUMNS = {"rgb_0": "rgb", "rgb_1": "rgb", "flow_0": "flow", "flow_1": "flow"}
# phase -> (stage, modality, {modality: phase whose encoder it starts from / mines with})
PHASES = {"infonce_rgb": ("infonce", "rgb", {}), "infonce_flow": ("infonce", "flow", {}),
          "coclr_rgb_c1": ("coclr", "rgb", {"rgb": "infonce_rgb", "flow": "infonce_flow"}),
          "coclr_flow_c1": ("coclr", "flow", {"flow": "infonce_flow", "rgb": "coclr_rgb_c1"}),
          "infonce_rgb_continued": ("infonce", "rgb", {"rgb": "infonce_rgb"})}


class InMemory:
    """Every video of a manifest decoded once (RGB and flow); ``read`` is the recipes' reader."""

    def __init__(self, manifest: str) -> None:
        rows = pq.read_table(str(Path(manifest) / "manifest.parquet")).to_pylist()
        missing = [r["video_id"] for r in rows if not r.get("flow_uri")]
        if missing:
            raise SystemExit(f"{len(missing)} videos have no flow (e.g. {missing[0]}): run "
                             f"python jobs/flow.py --manifest {manifest} --method farneback (or make demo)")
        self.rows = sorted(rows, key=lambda r: r["video_id"])
        groups = sorted({r["group_id"] or r["video_id"] for r in self.rows})
        for i, r in enumerate(self.rows):
            r["vid_index"], r["group_index"] = i, groups.index(r["group_id"] or r["video_id"])
            r["segments"] = "[]"  # the eval recipe's JSON form; single-action clips
        self.frames = {r[k]: read_frames(r[k], range(r["num_frames"])) for r in self.rows for k in ("uri", "flow_uri")}
        self.num_classes = max(r["label_index"] for r in self.rows) + 1
        self.views: dict[tuple, np.ndarray] = {}  # eval_views' cache

    def read(self, video_id: str, uri: str, indices) -> np.ndarray:
        return self.frames[uri][np.asarray(indices)]

    def split(self, name: str) -> list[dict]:
        return [r for r in self.rows if r["split"] == name]


def train_batches(data: InMemory, recipe, steps: int, batch_size: int, rng: np.random.Generator):
    """``steps`` batches of freshly drawn recipe samples, epochs of the train split in random order."""
    train, done = data.split("train"), 0
    while done < steps:
        order = rng.permutation(len(train))
        for s in range(min(len(train) // batch_size, steps - done)):
            rows = [train[i] for i in order[s * batch_size:(s + 1) * batch_size]]
            samples = [recipe.sample(r, rng, data.read, None) for r in rows]
            batch = {k: torch.from_numpy(np.stack([x[k] for x in samples])) for k in VIDEO_COLUMNS}
            for k in ("vid_index", "group_index", "label_index"):
                batch[k] = torch.tensor([r[k] for r in rows])
            yield normalize_batch(batch, VIDEO_COLUMNS, torch.device("cpu"))
            done += 1


def eval_views(data: InMemory, eval_recipe, modality: str, split: str) -> np.ndarray:
    """Every evaluation view of one split, ``(N, V, T, S, S, 3)`` uint8: deterministic, so drawn once
    per (modality, split) and shared by every encoder scored."""
    key = (eval_recipe, modality, split)
    if key not in data.views:
        recipe = dataclasses.replace(eval_recipe, modality=modality)
        data.views[key] = np.stack([recipe.sample(r, None, data.read, data.num_classes)["views"]
                                    for r in data.split(split)])
    return data.views[key]


def features(data: InMemory, eval_recipe, build_encoder, modality: str, split: str) -> Features:
    """The demo's evaluation features (:class:`FeatureExtractor`) of one split, views drawn in memory."""
    extract, rows = FeatureExtractor(build_encoder, modality=modality), data.split(split)
    views, out = eval_views(data, eval_recipe, modality, split), []
    for i in range(0, len(rows), 8):
        chunk = rows[i:i + 8]
        out.append(extract({"views": views[i:i + 8], "video_id": np.array([r["video_id"] for r in chunk]),
                            "label_index": np.array([r["label_index"] for r in chunk])})["feats"])
    return Features([r["video_id"] for r in rows], np.array([r["label_index"] for r in rows]), np.concatenate(out))


def score(data: InMemory, eval_recipe, backbone: str, modality: str, state: dict | None, seed: int) -> dict:
    """R@1 / R@5 and linear-probe top-1 (%) of one encoder (``state`` None: random init of ``seed``)."""
    build = functools.partial(build_from_state, backbone, {"num_classes": 0, "in_chans": IN_CHANS[modality]},
                              state, seed)
    train, test = (features(data, eval_recipe, build, modality, s) for s in ("train", "test"))
    r = retrieval_recall(test, train)
    return {"R@1": round(r["R@1"], 2), "R@5": round(r["R@5"], 2),
            "linear": round(linear_probe(train, test, data.num_classes, seed=seed)["top1"], 2),
            "miner_precision@5": round(miner_precision(train, data), 2)}


def miner_precision(train: Features, data: InMemory, k: int = 5) -> float:
    """How good these features are as CoCLR's miner: the share (%) of each train video's top-``k``
    neighbours among the train videos of other groups (never mined) that have its class."""
    group = {r["video_id"]: r["group_index"] for r in data.rows}
    g_N = np.array([group[v] for v in train.video_id])
    sim_NN = train.feats_ND @ train.feats_ND.T
    sim_NN[g_N[:, None] == g_N[None, :]] = -np.inf
    top_NK = np.argsort(-sim_NN, axis=1)[:, :k]
    return float((train.label_index[top_NK] == train.label_index[:, None]).mean() * 100)


def train_phase(name: str, job, data: InMemory, recipe, states: dict, steps: int, seed: int) -> dict:
    """One phase of the schedule from memory; its trained encoder state goes into ``states``."""
    stage, modality, init = PHASES[name]
    torch.manual_seed(seed)
    method = CoCLR(dataclasses.replace(job.method, modality=modality, stage=stage))
    for m, source in init.items():
        method.load_encoder_state(m, states[source])
    opt = torch.optim.Adam(method.trainable_parameters(), lr=job.optim.lr, weight_decay=job.optim.weight_decay)
    method.train()
    logs = []
    for batch in train_batches(data, recipe, steps, job.loop.batch_size, np.random.default_rng([seed, steps])):
        out = method(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        logs.append({k: float(v.detach()) for k, v in out.items() if v.numel() == 1})
    states[name] = method.encoder_state(modality)
    last = logs[-max(1, len(logs) // 4):]
    return {"state": method.encoder_state(modality, with_head=False), "steps": len(logs),
            **{f"last_{k}": round(float(np.mean([r[k] for r in last if k in r])), 3)
               for k in ("loss", "top1", "mined_precision") if any(k in r for r in last)}}


def supervised(job, data: InMemory, recipe, modality: str, steps: int, seed: int) -> dict:
    """Cross-entropy on clip ``_0`` with the labels, same samples and steps: the ceiling."""
    torch.manual_seed(seed)
    model = create_backbone(job.method.backbone, num_classes=data.num_classes, in_chans=IN_CHANS[modality])
    opt = torch.optim.Adam(model.parameters(), lr=job.optim.lr)
    model.train()
    for batch in train_batches(data, recipe, steps, job.loop.batch_size, np.random.default_rng([seed, steps, 1])):
        loss = F.cross_entropy(model(batch[f"{modality}_0"][:, :IN_CHANS[modality]]), batch["label_index"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.reset_classifier(0)
    return {"state": model.state_dict(), "steps": steps}


RGB_ROWS = ("random_rgb", "infonce_rgb", "infonce_rgb_continued", "coclr_rgb_c1", "supervised_rgb")
FLOW_ROWS = ("random_flow", "infonce_flow", "coclr_flow_c1", "supervised_flow")


def run_seed(job, data: InMemory, steps: int, seed: int) -> dict[str, dict]:
    """Every row of the table for one seed: ``{row: {R@1, R@5, linear, ...}}``."""
    rec = recipes.recipe("coclr", debug_size=job.data.debug_size, overrides=job.data.recipe_overrides)
    ev = recipes.recipe("eval", debug_size=True, overrides=["num_clips=2", "spatial_crops=1", f"stride={rec.stride}"])
    backbone, states, out = job.method.backbone, {}, {}
    for m in ("rgb", "flow"):
        out[f"random_{m}"] = score(data, ev, backbone, m, None, seed)
    for name in ("infonce_rgb", "infonce_flow", "coclr_rgb_c1", "coclr_flow_c1", "infonce_rgb_continued"):
        t0 = time.perf_counter()
        r = train_phase(name, job, data, rec, states, steps, seed)
        out[name] = {**score(data, ev, backbone, PHASES[name][1], r.pop("state"), seed), **r,
                     "seconds": round(time.perf_counter() - t0, 1)}
        log(f"seed {seed} {name}: {json.dumps(out[name])}")
    for m in ("rgb", "flow"):
        r = supervised(job, data, rec, m, steps, seed)
        out[f"supervised_{m}"] = {**score(data, ev, backbone, m, r.pop("state"), seed), **r}
        log(f"seed {seed} supervised_{m}: {json.dumps(out[f'supervised_{m}'])}")
    return out


def mean_std(runs: list[dict], row: str, key: str) -> tuple[float, float]:
    values = np.array([r[row][key] for r in runs], np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def claims(runs: list[dict]) -> dict[str, dict]:
    """Issue 10's targets, each with the figures it was judged on (mean ± std over the seeds)."""
    def above(a: str, b: str, key: str, by_std: bool) -> dict:
        (ma, sa), (mb, sb) = mean_std(runs, a, key), mean_std(runs, b, key)
        margin = max(sa, sb) if by_std else 0.0
        wins = sum(r[a][key] > r[b][key] for r in runs)
        return {"holds": ma - mb > margin, "a": round(ma, 2), "b": round(mb, 2), "required_margin": round(margin, 2),
                "seeds_a_above_b": f"{wins}/{len(runs)}"}

    out = {f"infonce_flow > random_flow ({k})": above("infonce_flow", "random_flow", k, False) for k in ("R@1", "linear")}
    out.update({f"coclr_rgb_c1 > infonce_rgb_continued by > 1 std ({k})":
                above("coclr_rgb_c1", "infonce_rgb_continued", k, True) for k in ("R@1", "linear")})
    for rows in (RGB_ROWS, FLOW_ROWS):
        for row in rows[1:-1]:
            out.update({f"{row} > {rows[0]} ({k})": above(row, rows[0], k, False) for k in ("R@1", "linear")})
    return out


def table(runs: list[dict]) -> dict[str, dict]:
    keys = ("R@1", "R@5", "linear", "miner_precision@5")
    return {row: {k: "{:.1f} ± {:.1f}".format(*mean_std(runs, row, k)) for k in keys} for row in RGB_ROWS + FLOW_ROWS}


DEMO_LABELS = {"random_rgb": "random init (rgb)", "infonce_rgb": "InfoNCE (rgb)", "coclr_rgb_c1": "CoCLR (rgb)",
               "random_flow": "random init (flow)", "infonce_flow": "InfoNCE (flow)", "coclr_flow_c1": "CoCLR (flow)"}


def write_reference(path: str, report: dict, manifest_url: str) -> None:
    """The rows ``make demo`` prints, as mean ± std over the seeds, for the demo to show beside its own."""
    from pipelines.io import manifest

    ref = {"command": report["command"], "date": report["date"], "seeds": report["seeds"],
           "steps_per_phase": report["steps_per_phase"], "variant": report["variant"],
           "dataset_fingerprint": manifest.fingerprint(manifest.read_manifest(manifest_url)),
           "rows": {label: {k: report["table_mean_std"][row][k] for k in ("R@1", "linear")}
                    for row, label in DEMO_LABELS.items()}}
    Path(path).write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", default="data/demo/ucf101", help="the demo's ingested dataset, with flow (make demo)")
    p.add_argument("--variant", default="demo", help="jobs/coclr.py variant whose recipe, model and optimiser are used")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="job override, as jobs/coclr.py --set")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--steps", type=int, default=None,
                   help="optimiser steps per phase (default: the variant's InfoNCE epochs x steps per epoch)")
    p.add_argument("--budget-s", type=float, default=3600, help="skip further seeds once this is expected to be spent")
    p.add_argument("--write-reference", metavar="PATH", help="also write the demo's reference rows (jobs/demo_reference.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from pipelines.methods import get_method

    job = apply_overrides(get_method("coclr").variants[args.variant](), args.overrides)
    started, t0, load_start = time.time(), time.perf_counter(), load1()
    data = InMemory(args.manifest)
    per_epoch = len(data.split("train")) // job.loop.batch_size
    steps = args.steps or job.schedule.init_epochs * per_epoch
    log(f"decoded {len(data.rows)} videos in {time.perf_counter() - t0:.0f}s; {steps} steps per phase")
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, skipped = run_seeds(seeds, functools.partial(run_seed, job, data, steps), started=started,
                              budget_s=args.budget_s)
    report = {"manifest": args.manifest, "variant": args.variant, "overrides": args.overrides,
              "steps_per_phase": steps, "batch_size": job.loop.batch_size, "seeds": seeds[:len(runs)],
              "seeds_skipped_for_budget": skipped, "table_mean_std": table(runs), "claims": claims(runs),
              "per_seed": [{row: {k: v for k, v in r.items() if k in ("R@1", "R@5", "linear", "miner_precision@5", "last_mined_precision")}
                            for row, r in run.items()} for run in runs]}
    report = envelope("coclr_scale", " ".join(["python bench/coclr_scale.py", *(argv or sys.argv[1:])]),
                      args.variant, report, machine=machine_info(), load_start=load_start, started=started)
    if args.write_reference:
        write_reference(args.write_reference, report, args.manifest)
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
