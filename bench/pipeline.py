"""Data-pipeline throughput benchmark: raw decode vs the Ray Data pipeline vs a PyTorch DataLoader.

    python bench/pipeline.py [--quick | --tiny] [--data DIR] [--set videos=240 --set clip_len=32 ...]

Prints ONE JSON object on stdout (progress goes to stderr). Everything is measured in
this run on the same videos: synthetic UCF-101-style clips (:mod:`pipelines.prep.synthetic`)
written to a temporary folder and ingested twice, once transcoded to a short GOP
(``gop``, default 8; x264 closed GOP) and once as the long-GOP originals (x264 defaults:
keyint 250, B-frames, i.e. one keyframe per video here). The throughput figures use the
transcoded set and exactly the same samples: the ``classification`` recipe's clips of
epochs ``1..epochs`` (epoch 0 is the untimed warm-up), each drawn from
``sample_rng(seed, epoch, video)`` and visited in the pipeline's per-epoch order.

  raw_decode_clips_per_s   the limit: ``read_frames(uri, indices, backend, threads=1)`` for
                           exactly the indices each sample needs and nothing else, in a
                           spawn ``multiprocessing.Pool`` of ``cores`` processes.
  ray_clips_per_s          ``build_pipeline(...)`` per epoch (decode, sampling, augmentation,
                           quarantine ledger, Arrow tensor blocks) consumed with
                           ``iter_torch_batches`` in this process, on the embedded Ray
                           cluster of ``cores`` CPUs; building each epoch's dataset counts.
  dataloader_clips_per_s   the baseline users run today: ``torch.utils.data.DataLoader``
                           (``num_workers=cores``, persistent workers, spawn) over a Dataset
                           calling ``recipes.make_sample`` with ``read_frames``: the same decode
                           and augmentation code; one loader iteration per epoch.
  decode_augment_clips_per_s  the same samples by ``recipes.make_sample`` in the spawn Pool:
                           decode + sampling + augmentation with no loader framework, i.e. the
                           real ceiling of both loaders (augmentation is not free: compare it
                           with raw_decode to see what the recipe's CPU augmentation costs).
  decoded_per_used_frames  ``ReadInfo.frames_decoded / frames requested`` over epoch 1's
                           samples with the PyAV backend, on both sets (decord has no
                           decoded-frame counter, so its figure cannot be measured).
  decode_worker_rss_mb     VmRSS of one long-lived spawned process calling
                           ``read_frames(backend)`` on the samples (cycled), after the first
                           ``rss_first`` and after the last of ``rss_clips`` clips.

The DataLoader uses ``spawn``: this process runs Ray (gRPC threads) and OpenCV, and
forking a process that holds such thread pools can deadlock (decord #220, torchvision
#9010); spawn only costs start-up time, which the warm-up epoch excludes. The four
throughput measurements run one after another, never at once, in ``rounds`` rounds with
the order rotated each round; the headline figure is the median, and every round is in
``rounds_detail`` with the 1-minute load average around it, so a load spike shows as a
disagreement between rounds. Compare the ratios across machines, not the clips/s. The
goals are reported in ``goals_met``, never asserted. With ``coclr_epochs > 0`` the same
four figures are measured for the ``coclr`` recipe (two clips, RGB + Farneback flow).
Ray Data's progress bars are off (display only; they would interleave with the log).
``--data DIR`` keeps the videos for a re-run with the same settings (ingest skips known files).

Shape legend: ``T`` frames per clip, ``S`` crop size.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.common import load1, log  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipelines.io import manifest  # noqa: E402
from pipelines.data import recipes  # noqa: E402
from pipelines.io.video import ReadInfo, read_frames  # noqa: E402

Sample = list[tuple[str, np.ndarray]]  # the reads of one sample: (uri, frame indices) per file
SPLIT = "train"


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to measure; named variants are :func:`quick` and :func:`tiny`, edits with ``--set``."""

    variant: str = "default"
    videos: int = 120          # videos in the dataset (and per epoch)
    frames: int = 64           # frames per video
    height: int = 128          # the demo preset's size (ingest transcodes to a short side of 128)
    width: int = 128           # a multiple of 128: byte-reproducible x264 output (synthetic.py)
    clip_len: int = 16         # T
    crop: int = 112            # S
    gop: int = 8               # keyframe interval of the transcoded set
    batch_size: int = 16
    epochs: int = 6            # measured epochs per round (epoch 0 is the warm-up)
    rounds: int = 2
    rss_clips: int = 5000
    rss_first: int = 500
    coclr_epochs: int = 2      # 0 skips the CoCLR section (flow computation + two-clip samples)
    cores: int = len(os.sched_getaffinity(0))
    rows_per_task: int = 4     # LoaderOptions default
    backend: str = "auto"      # read_frames backend of every throughput and RSS measurement
    seed: int = 0


def quick() -> BenchConfig:
    """About a minute on 2 cores: small videos, debug-size clips, one round, 1,000 RSS clips."""
    return dataclasses.replace(BenchConfig(), variant="quick", videos=24, frames=48, height=128, width=128,
                               clip_len=8, crop=64, batch_size=8, epochs=16, rounds=1, rss_clips=1000,
                               coclr_epochs=0)


def tiny() -> BenchConfig:
    """Seconds of measuring (the test): every code path, figures meaningless."""
    return dataclasses.replace(quick(), variant="tiny", videos=8, frames=24, batch_size=4, epochs=2,
                               rss_clips=60, rss_first=20)


# --------------------------------------------------------------------------- data


def prepare_data(cfg: BenchConfig, root: Path) -> dict[str, str]:
    """Generate the synthetic videos and ingest them twice; returns ``{"transcoded", "long_gop"}`` dirs."""
    from pipelines.prep.ingest import IngestConfig, run_ingest
    from pipelines.prep.synthetic import generate, preset

    classes = min(12, cfg.videos)  # one group: every video is in the train split
    syn = preset("demo", num_classes=classes, groups=1, clips_per_group=math.ceil(cfg.videos / classes),
                 multi_videos=0, frames=cfg.frames, height=cfg.height, width=cfg.width, seed=cfg.seed)
    generate(str(root / "src"), syn, workers=cfg.cores, progress=False)
    out = {}
    for name, gop in (("transcoded", cfg.gop), ("long_gop", None)):
        report = run_ingest(IngestConfig(fmt="ucf101", src=str(root / "src" / "ucf101"), dst=str(root / name),
                                         gop=gop))
        if report.quarantined:
            raise RuntimeError(f"ingest of {name} quarantined {report.quarantined} videos: {report.reasons}")
        out[name] = str(root / name)
    return out


def keyframe_interval(uris: Iterable[str]) -> float:
    """Mean frames per keyframe over the files (from packet flags, no decoding)."""
    import av

    packets = keys = 0
    for uri in uris:
        with av.open(uri) as container:
            for packet in container.demux(video=0):
                if packet.size:
                    packets += 1
                    keys += bool(packet.is_keyframe)
    return round(packets / max(keys, 1), 2)


# --------------------------------------------------------------------------- samples


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The pipeline's sample order of an epoch (the permutation ``build_pipeline`` draws)."""
    return np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)


def items_of(manifest_dir: str, rcfg: recipes.RecipeConfig, limit: int) -> list[dict]:
    """The item rows ``build_pipeline`` turns into samples (its own private helper, so they match)."""
    from pipelines.data.dataset import _items

    items, excluded, _ = _items(manifest.read_manifest(manifest_dir), rcfg, SPLIT, limit)
    if excluded:
        raise RuntimeError(f"{len(excluded)} rows unusable by {rcfg.name!r}: {excluded[:2]}")
    return items


class _Planned(Exception):
    """Raised by the recording reader once a sample's reads are known (skips augmentation)."""


def sample_reads(item: dict, rcfg: recipes.RecipeConfig, seed: int, epoch: int) -> Sample:
    """The exact ``(uri, indices)`` reads of one sample, from :func:`recipes.make_sample` itself."""
    reads: Sample = []
    n_reads = 2 if rcfg.needs_flow else 1  # every sampler reads all its files before augmenting

    def record(video_id: str, uri: str, idx: np.ndarray) -> np.ndarray:
        reads.append((uri, np.asarray(idx, np.int64)))
        if len(reads) == n_reads:
            raise _Planned
        return np.zeros((len(idx), 2, 2, 3), np.uint8)

    try:
        recipes.make_sample(item, rcfg, seed=seed, epoch=epoch, num_classes=None, read=record)
    except _Planned:
        pass
    return reads


def plan(items: list[dict], rcfg: recipes.RecipeConfig, seed: int, epochs: Iterable[int]) -> dict[int, list[Sample]]:
    """``{epoch: [reads of each sample, in pipeline order]}``."""
    return {e: [sample_reads(items[i], rcfg, seed, e) for i in epoch_order(len(items), seed, e, rcfg.shuffle)]
            for e in epochs}


# --------------------------------------------------------------------------- raw decode


def _init_worker(*_: Any) -> None:
    cv2.setNumThreads(1)  # one process per core, as Ray's decode tasks
    torch.set_num_threads(1)


def _decode_samples(samples: list[Sample], backend: str) -> int:
    for sample in samples:
        for uri, idx in sample:
            read_frames(uri, idx, backend=backend, threads=1)
    return len(samples)


@dataclasses.dataclass(frozen=True)
class _DecodeChunk:
    """Pool task of the raw-decode figure: the reads only."""

    backend: str

    def __call__(self, samples: list[Sample]) -> int:
        return _decode_samples(samples, self.backend)


@dataclasses.dataclass(frozen=True)
class _SampleChunk:
    """Pool task of the decode+augment figure: whole samples, no loader framework."""

    dataset: "ClipDataset"

    def __call__(self, keys: list[tuple[int, int]]) -> int:
        for key in keys:
            self.dataset[key]
        return len(keys)


class WorkerPool:
    """A spawn ``multiprocessing.Pool`` of ``cores`` processes fed small chunks (balanced tails)."""

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self.pool = multiprocessing.get_context("spawn").Pool(cores, initializer=_init_worker)

    def run(self, fn: Callable[[list], int], tasks: list) -> int:
        size = max(1, len(tasks) // (self.cores * 8))
        return sum(self.pool.imap_unordered(fn, [tasks[i:i + size] for i in range(0, len(tasks), size)]))

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


# --------------------------------------------------------------------------- DataLoader baseline


class ClipDataset(torch.utils.data.Dataset):
    """``dataset[(epoch, i)]``: sample ``i`` of ``epoch`` by :func:`recipes.make_sample`, tensors only."""

    def __init__(self, items: list[dict], rcfg: recipes.RecipeConfig, seed: int, backend: str) -> None:
        self.items, self.rcfg, self.seed, self.backend = items, rcfg, seed, backend
        self.drop = set(recipes.string_columns(rcfg))  # as LoaderOptions(strings=False)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, i = key
        sample = recipes.make_sample(self.items[i], self.rcfg, seed=self.seed, epoch=epoch, num_classes=None,
                                     read=self.read)
        return {k: v for k, v in sample.items() if k not in self.drop}

    def read(self, video_id: str, uri: str, idx: np.ndarray) -> np.ndarray:
        return read_frames(uri, idx, backend=self.backend, threads=1)


class EpochSampler(torch.utils.data.Sampler):
    """Keys ``(epoch, i)`` in the pipeline's order; set ``.epoch`` before iterating (runs in the main process)."""

    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def __iter__(self):
        return iter([(self.epoch, int(i)) for i in epoch_order(self.n, self.seed, self.epoch, self.shuffle)])

    def __len__(self) -> int:
        return self.n


class Loader:
    """The DataLoader baseline, workers kept across epochs and rounds."""

    def __init__(self, cfg: BenchConfig, items: list[dict], rcfg: recipes.RecipeConfig) -> None:
        self.sampler = EpochSampler(len(items), cfg.seed, rcfg.shuffle)
        self.loader = torch.utils.data.DataLoader(
            ClipDataset(items, rcfg, cfg.seed, cfg.backend), batch_size=cfg.batch_size, sampler=self.sampler,
            num_workers=cfg.cores, persistent_workers=True, multiprocessing_context="spawn",
            worker_init_fn=_init_worker)
        self.key = first_clip_column(rcfg)

    def run(self, epochs: Iterable[int]) -> int:
        clips = 0
        for epoch in epochs:
            self.sampler.epoch = epoch
            clips += sum(batch[self.key].shape[0] for batch in self.loader)
        return clips

    def close(self) -> None:
        del self.loader  # ends the persistent workers


def first_clip_column(rcfg: recipes.RecipeConfig) -> str:
    return next(iter(rcfg.video_columns()))


# --------------------------------------------------------------------------- Ray Data pipeline


def ray_run(cfg: BenchConfig, manifest_dir: str, rcfg: recipes.RecipeConfig, epochs: Iterable[int]) -> int:
    """Build and drain the pipeline of each epoch; raises if a sample went missing."""
    from pipelines.data.dataset import LoaderOptions, build_pipeline

    options = LoaderOptions(strings=False, rows_per_task=cfg.rows_per_task, backend=cfg.backend)
    key, clips = first_clip_column(rcfg), 0
    for epoch in epochs:
        pipe = build_pipeline(manifest_dir, rcfg, SPLIT, seed=cfg.seed, epoch=epoch, limit=cfg.videos,
                              options=options)
        got = sum(batch[key].shape[0] for batch in pipe.dataset.iter_torch_batches(batch_size=cfg.batch_size))
        if not pipe.accounting(got)["balanced"] or got != len(pipe.inputs):
            raise RuntimeError(f"epoch {epoch}: {pipe.accounting(got)}")
        clips += got
    return clips


# --------------------------------------------------------------------------- measurements


def timed(fn: Callable[[], int]) -> dict[str, float]:
    """Run ``fn`` (returning clips); clips, seconds, clips/s and the 1-min load around it."""
    before, start = load1(), time.perf_counter()
    clips = fn()
    seconds = time.perf_counter() - start
    return {"clips": clips, "seconds": round(seconds, 2), "clips_per_s": round(clips / seconds, 2),
            "load_before": before, "load_after": load1()}


def throughput(cfg: BenchConfig, manifest_dir: str, rcfg: recipes.RecipeConfig, epochs: int,
               rounds: int) -> dict[str, Any]:
    """Median clips/s of each way of producing the same samples, with every round's detail."""
    items = items_of(manifest_dir, rcfg, cfg.videos)
    measured = range(1, epochs + 1)
    plans = plan(items, rcfg, cfg.seed, range(0, epochs + 1))
    keys = {e: [(e, int(i)) for i in epoch_order(len(items), cfg.seed, e, rcfg.shuffle)] for e in plans}
    pool, loader = WorkerPool(cfg.cores), Loader(cfg, items, rcfg)
    decode, make = _DecodeChunk(cfg.backend), _SampleChunk(ClipDataset(items, rcfg, cfg.seed, cfg.backend))
    runs = {"raw": lambda es: pool.run(decode, [s for e in es for s in plans[e]]),
            "decode_augment": lambda es: pool.run(make, [k for e in es for k in keys[e]]),
            "dataloader": loader.run, "ray": lambda es: ray_run(cfg, manifest_dir, rcfg, es)}
    names, detail = list(runs), {name: [] for name in runs}
    try:
        log(f"{rcfg.name}: warm-up (epoch 0 of each)")
        warm = {name: timed(lambda: fn([0])) for name, fn in runs.items()}
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotated: drift hits each alike
                log(f"{rcfg.name}: round {r + 1}/{rounds} {name} ({epochs * len(items)} clips)")
                detail[name].append(timed(lambda: runs[name](measured)))
                log(f"  {detail[name][-1]}")
    finally:
        pool.close()
        loader.close()
    median = {k: round(statistics.median(d["clips_per_s"] for d in v), 2) for k, v in detail.items()}
    return {"clips_per_s": median, "rounds_detail": detail, "warm_up": warm,
            "clips_per_measurement": epochs * len(items)}


def decoded_per_used(samples: list[Sample]) -> dict[str, Any]:
    """PyAV's decoded frames per requested frame over the reads (one-thread decode)."""
    decoded = used = seeks = reads = 0
    for sample in samples:
        for uri, idx in sample:
            info = ReadInfo()
            read_frames(uri, idx, backend="pyav", threads=1, info=info)
            decoded, used, seeks, reads = decoded + info.frames_decoded, used + len(idx), seeks + info.seeks, reads + 1
    return {"ratio": round(decoded / used, 3), "frames_decoded": decoded, "frames_used": used, "reads": reads,
            "seeks_per_read": round(seeks / reads, 2)}


def decode_ratios(cfg: BenchConfig, data: dict[str, str], rcfg: recipes.RecipeConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": "pyav", "epoch": 1,
                           "decord": "not measured: decord exposes no decoded-frame counter"}
    for name, manifest_dir in data.items():
        items = items_of(manifest_dir, rcfg, cfg.videos)
        detail = decoded_per_used(plan(items, rcfg, cfg.seed, [1])[1])
        detail["mean_keyframe_interval"] = keyframe_interval(item["uri"] for item in items)
        out[name], out[f"{name}_detail"] = detail["ratio"], detail
    return out


def _vm_rss_mb() -> float:
    with open("/proc/self/status") as f:  # psutil is not installed here
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def _rss_worker(samples: list[Sample], clips: int, first: int, backend: str, conn) -> None:
    from pipelines.io import video

    _init_worker()
    every, curve = max(first, clips // 10), []
    for k in range(1, clips + 1):
        _decode_samples([samples[(k - 1) % len(samples)]], backend)
        if k == first or k % every == 0 or k == clips:
            gc.collect()
            curve.append([k, _vm_rss_mb()])
    conn.send({"curve": curve, "backends": dict(video.BACKEND_COUNTS)})
    conn.close()


def decode_worker_rss(cfg: BenchConfig, manifest_dir: str, rcfg: recipes.RecipeConfig) -> dict[str, Any]:
    """RSS of one long-lived decode process after ``rss_first`` and after ``rss_clips`` clips."""
    items = items_of(manifest_dir, rcfg, cfg.videos)
    samples = [s for e in range(1, cfg.epochs + 1) for s in plan(items, rcfg, cfg.seed, [e])[e]]
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_rss_worker, args=(samples, cfg.rss_clips, cfg.rss_first, cfg.backend, send))
    proc.start()
    send.close()
    result = recv.recv()
    proc.join()
    curve = result["curve"]
    first = next(mb for k, mb in curve if k == cfg.rss_first)
    last = curve[-1][1]
    return {"first_n": cfg.rss_first, "after_first_n": first, "after_last": last, "clips": cfg.rss_clips,
            "growth_pct": round(100 * (last - first) / first, 2), "curve": curve,
            "distinct_samples_cycled": len(samples), "read_backends": result["backends"],
            "at_least_5000_clips": cfg.rss_clips >= 5000}


# --------------------------------------------------------------------------- report


def machine_info() -> dict[str, Any]:
    import av
    import decord

    return {**common.machine_info(), "pyav": av.__version__, "ffmpeg_pyav": av.ffmpeg_version_info,
            "decord": decord.__version__}


def goals(tp: dict[str, float], ratios: dict[str, float | None], decode: dict, rss: dict) -> dict[str, bool]:
    return {"ray_ge_0.9x_raw": tp["ray"] >= 0.9 * tp["raw"], "ray_ge_dataloader": tp["ray"] >= tp["dataloader"],
            "decoded_per_used_le_1.5_transcoded": decode["transcoded"] <= 1.5,
            "rss_flat_within_10pct": abs(rss["growth_pct"]) <= 10.0,
            "rss_measured_over_5000_clips": rss["at_least_5000_clips"]}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def all_ratios(c: dict[str, float]) -> dict[str, float | None]:
    return {"ray_over_raw": ratio(c["ray"], c["raw"]), "ray_over_dataloader": ratio(c["ray"], c["dataloader"]),
            "ray_over_decode_augment": ratio(c["ray"], c["decode_augment"]),
            "dataloader_over_decode_augment": ratio(c["dataloader"], c["decode_augment"]),
            "decode_augment_over_raw": ratio(c["decode_augment"], c["raw"])}


def coclr_section(cfg: BenchConfig, data: dict[str, str]) -> dict[str, Any]:
    """Farneback flow for the transcoded set, then the three throughput figures of ``coclr``."""
    from pipelines.prep.flow import FlowConfig, run_flow

    start = time.perf_counter()
    report = run_flow(FlowConfig(manifest=data["transcoded"], method="farneback"))
    flow_s = round(time.perf_counter() - start, 1)
    rcfg = recipes.recipe("coclr", overrides=[f"clip_len={cfg.clip_len}", f"augment.out_size={cfg.crop}"])
    tp = throughput(cfg, data["transcoded"], rcfg, cfg.coclr_epochs, rounds=1)
    items = items_of(data["transcoded"], rcfg, cfg.videos)
    pairs = plan(items, rcfg, cfg.seed, [1])[1]
    c = tp["clips_per_s"]
    return {"unit": "samples (2 RGB + 2 flow clips of T frames) per s", "flow_files": report.with_flow,
            "flow_seconds": flow_s, "raw_decode_samples_per_s": c["raw"], "ray_samples_per_s": c["ray"],
            "dataloader_samples_per_s": c["dataloader"], "decode_augment_samples_per_s": c["decode_augment"],
            "ratios": all_ratios(c),
            "decoded_per_used_frames": {"rgb": decoded_per_used([s[:1] for s in pairs])["ratio"],
                                        "flow": decoded_per_used([s[1:] for s in pairs])["ratio"]},
            "rounds_detail": tp["rounds_detail"], "clips_per_measurement": tp["clips_per_measurement"],
            "epochs": cfg.coclr_epochs}


def run(cfg: BenchConfig, root: Path) -> dict[str, Any]:
    from pipelines.cluster import init_ray

    import ray

    phase = common.PhaseTimer()

    init_ray(num_cpus=cfg.cores)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one INFO line per executed dataset
    data = phase("generate+ingest", lambda: prepare_data(cfg, root))
    rcfg = recipes.recipe("classification", overrides=[f"clip_len={cfg.clip_len}", f"augment.out_size={cfg.crop}"])
    tp = phase("throughput", lambda: throughput(cfg, data["transcoded"], rcfg, cfg.epochs, cfg.rounds))
    decode = phase("decoded_per_used", lambda: decode_ratios(cfg, data, rcfg))
    rss = phase("decode_worker_rss", lambda: decode_worker_rss(cfg, data["transcoded"], rcfg))
    coclr = (phase("coclr", lambda: coclr_section(cfg, data)) if cfg.coclr_epochs > 0
             else {"skipped": "coclr_epochs=0 in this variant"})
    resources, nodes = ray.cluster_resources(), len(ray.nodes())
    ray.shutdown()
    c = tp["clips_per_s"]
    ratios = all_ratios(c)
    return {"raw_decode_clips_per_s": c["raw"], "ray_clips_per_s": c["ray"], "dataloader_clips_per_s": c["dataloader"],
            "decode_augment_clips_per_s": c["decode_augment"], "decoded_per_used_frames": decode, "decode_worker_rss_mb": rss, "ratios": ratios,
            "goals_met": goals(c, ratios, decode, rss), "rounds_detail": tp["rounds_detail"],
            "warm_up": tp["warm_up"], "coclr": coclr, "phases": phase.phases,
            "config": {**dataclasses.asdict(cfg), "recipe": "classification", "clip_shape_TSS3":
                       [cfg.clip_len, cfg.crop, cfg.crop, 3], "clips_per_measurement": tp["clips_per_measurement"],
                       "dataloader_context": "spawn", "ray_cluster_cpus": resources.get("CPU"),
                       "ray_nodes": nodes}}


def parse_config(argv: list[str] | None) -> tuple[BenchConfig, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="about a minute: small videos and clips, one round")
    size.add_argument("--tiny", action="store_true", help="smallest run, for the test (figures meaningless)")
    parser.add_argument("--data", help="keep the generated videos in DIR (reused when run again) instead of a "
                                       "temporary folder")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a BenchConfig field, e.g. --set videos=240 (repeatable)")
    args = parser.parse_args(argv)
    base = tiny() if args.tiny else quick() if args.quick else BenchConfig()
    cfg = recipes.apply_overrides(base, args.set)
    if cfg.rss_first >= cfg.rss_clips:
        parser.error("rss_first must be below rss_clips")
    return cfg, args.data


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg, data_dir = parse_config(argv)
    started, load_start = time.time(), load1()
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="vidray-bench-pipeline-") as tmp:
        report = run(cfg, Path(data_dir or tmp))
    report = common.envelope("bench/pipeline.py", " ".join(["python"] + sys.argv), cfg.variant, report,
                             machine=machine, load_start=load_start, started=started)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
