"""Optimiser, parameter groups and the per-step LR schedule of the training loop."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn


@dataclasses.dataclass
class OptimConfig:
    """Optimiser and LR schedule (defaults: CoCLR's Adam, lr 1e-3, wd 1e-5).

    ``lr_mults`` gives parameter groups their own LR: ``("backbone.=0.1", "fusion.=10")``
    multiplies the LR of every parameter whose name starts with the prefix (the first
    match wins; the rest keep ``lr``). A method may also define ``param_groups()``
    returning ``[{"params": [...], "lr_mult": x, "name": ...}, ...]``.
    """

    optimizer: str = "adam"          # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-5
    momentum: float = 0.9            # sgd only
    schedule: str = "cosine"         # cosine | step | constant
    warmup_epochs: float = 0.0
    milestones: tuple[int, ...] = ()  # step schedule: epochs where lr *= gamma
    gamma: float = 0.1
    grad_clip: float = 0.0           # 0: off
    lr_mults: tuple[str, ...] = ()   # "name_prefix=multiplier"


def _trainable(method: nn.Module) -> list[tuple[str, nn.Parameter]]:
    chosen = None
    if hasattr(method, "trainable_parameters"):
        chosen = {id(p) for p in method.trainable_parameters()}
    return [(n, p) for n, p in method.named_parameters()
            if p.requires_grad and (chosen is None or id(p) in chosen)]


def param_groups(method: nn.Module, cfg: OptimConfig) -> list[dict]:
    """The optimiser's parameter groups, each with ``lr = cfg.lr * lr_mult`` and a ``name``.

    Raises:
        ValueError: a malformed ``lr_mults`` entry.
    """
    if hasattr(method, "param_groups"):
        groups = method.param_groups()
    else:
        rules = []
        for entry in cfg.lr_mults:
            prefix, sep, mult = entry.partition("=")
            if not sep:
                raise ValueError(f"optim.lr_mults entry {entry!r} is not 'name_prefix=multiplier'")
            rules.append((prefix, float(mult)))
        by_rule: dict[str, dict] = {}
        for name, p in _trainable(method):
            prefix, mult = next(((pre, m) for pre, m in rules if name.startswith(pre)), ("default", 1.0))
            by_rule.setdefault(prefix, {"params": [], "lr_mult": mult, "name": prefix})["params"].append(p)
        groups = list(by_rule.values())
    for g in groups:
        g["lr"] = cfg.lr * g.get("lr_mult", 1.0)
    return [g for g in groups if g["params"]]


def make_optimizer(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser of ``cfg.optimizer`` over parameter groups (a list of parameters also works)."""
    groups = list(groups)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": [p for p in groups if p.requires_grad]}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adam, adamw or sgd")


def lr_factor(step: int, steps_per_epoch: int, epochs: int, cfg: OptimConfig) -> float:
    """Multiplier of the base LR at ``step``: linear warm-up, then cosine / step / constant."""
    epoch = step / max(1, steps_per_epoch)
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
        return (epoch + 1 / max(1, steps_per_epoch)) / cfg.warmup_epochs
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        span = max(1e-8, epochs - cfg.warmup_epochs)
        progress = min(1.0, (epoch - cfg.warmup_epochs) / span)
        return 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose cosine, step or constant")
