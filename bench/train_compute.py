"""The training step alone for ``bench/train.py``: ``compute_only`` (no data loading, no Ray) and
the ``--gpu`` S3D CoCLR figures.

Shape legend: ``B`` batch, ``T`` frames per clip, ``S`` crop size.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import torch

from bench.common import log
from pipelines.data import recipes
from pipelines.data.normalize import normalize_batch
from vidmodels.methods import CoCLR, CoCLRConfig


def synthetic_batch(rcfg: recipes.RecipeConfig, batch: int, device: torch.device, seed: int = 0) -> dict:
    """A uint8 batch with the ``coclr`` recipe's tensor columns (what ``iter_torch_batches`` yields)."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, (dtype, shape) in recipes.batch_schema(rcfg).items():
        if dtype == "uint8":
            out[name] = torch.randint(0, 256, (batch, *shape), generator=g, dtype=torch.uint8)
        elif dtype == "int64":
            out[name] = torch.arange(batch).view(-1, *([1] * len(shape))).expand(batch, *shape).clone()
    return {k: v.to(device) for k, v in out.items()}


def compute_only(method_cfg: CoCLRConfig, rcfg: recipes.RecipeConfig, *, batch: int, steps: int,
                 device: torch.device, bf16: bool, warmup: int = 2) -> dict[str, Any]:
    """Clips/s of the training step alone on tensors already on ``device`` (no data loading).

    The step is the loop's: ``normalize_batch`` (uint8 -> normalised float), forward under
    autocast when ``bf16``, backward, Adam; a clip is one sample (2 views), as in the loop.
    """
    torch.manual_seed(0)
    method = CoCLR(method_cfg).to(device).train()
    optimizer = torch.optim.Adam(method.trainable_parameters(), lr=1e-3, weight_decay=1e-5)
    data = synthetic_batch(rcfg, batch, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> float:
        with autocast:
            loss = method(normalize_batch(data, rcfg.video_columns(), device))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    losses = [step() for _ in range(steps)]  # float(loss) syncs every step, as the loop's report does
    seconds = time.perf_counter() - start
    out = {"clips_per_s": round(batch * steps / seconds, 2), "steps": steps, "batch": batch,
           "seconds": round(seconds, 2), "dtype": "bf16 autocast" if bf16 else "fp32",
           "loss_finite": bool(np.isfinite(losses).all())}
    if device.type == "cuda":
        out["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def gpu_section(cfg, requested: bool) -> dict[str, Any]:
    """S3D CoCLR at 32 x 128² per GPU, bf16 vs fp32, or why it was skipped."""
    if not requested:
        return {"skipped": "not requested (pass --gpu)"}
    if not torch.cuda.is_available():
        return {"skipped": f"no CUDA device here (torch {torch.__version__}, "
                           f"cuda build {torch.version.cuda or 'none'})"}
    device = torch.device("cuda", 0)
    method_cfg = CoCLRConfig(backbone="s3d", modality="rgb", stage="infonce")
    rcfg = recipes.recipe("coclr")  # 2 x 32 frames, 128 px
    runs = {}
    for name, bf16 in (("bf16", True), ("fp32", False)):
        log(f"gpu: s3d {name}")
        runs[name] = compute_only(method_cfg, rcfg, batch=cfg.gpu_batch, steps=cfg.gpu_steps, device=device,
                                  bf16=bf16, warmup=3)
    return {"device": torch.cuda.get_device_name(device), "gpus_used": 1,
            "gpus_visible": torch.cuda.device_count(), "clip_shape_TSS": [rcfg.clip_len, rcfg.crop_size,
                                                                          rcfg.crop_size],
            "backbone": "s3d", "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "clips_per_s_per_gpu_bf16": runs["bf16"]["clips_per_s"],
            "clips_per_s_per_gpu_fp32": runs["fp32"]["clips_per_s"],
            "bf16_over_fp32": round(runs["bf16"]["clips_per_s"] / runs["fp32"]["clips_per_s"], 3), "runs": runs}
