"""CoCLR: co-training RGB and flow encoders with positives mined in the other view.

One ``CoCLR`` module trains ONE modality's encoder (query encoder + projection head,
with a momentum key encoder and a key queue, as in MoCo). ``stage`` picks the
positives of each query, all against the same ``[own key] + queue`` candidates:

- ``"infonce"`` (initialisation, thesis Eq. 4.1): only the query's own key.
- ``"coclr"`` (alternation, Eq. 4.2-4.5): the own key plus the top-K queue entries
  by similarity in the *other* modality's feature space, computed by that
  modality's frozen encoder (+ frozen head) and a second queue of its keys.
  Entries from the query's own source group (``group_index``: the clips of one
  source video, e.g. one UCF101 ``gNN``) are never mined and, as in the authors'
  code, count as positives (``same_video_positive``). On ``own_key_drop_p`` of the
  training steps (the authors' 0.9) the own key is removed from the positive set of
  every row that has other positives: after InfoNCE its similarity is already high
  and would dominate the positive set. Mining starts only once the queue is full;
  until then the loss is InfoNCE (plus same-group positives). With K=0, no
  same-group positives and ``own_key_drop_p=0`` it is exactly InfoNCE.
- ``"ubernce"`` (oracle, L915-L921): the own key plus every queue entry with the
  query's class label.

Batch contract (after the train loop has moved it to the device and normalised it)::

    rgb_0, rgb_1    float (B, 3, T, H, W)  two augmented clips of one video, ImageNet-normalised
    flow_0, flow_1  float (B, 3, T, H, W)  TV-L1 flow aligned with rgb_0/rgb_1, in [-1, 1];
                                           channels (x, y, 0); only the first 2 are used
    vid_index       int64 (B,)             unique id >= 0 per video
    group_index     int64 (B,)             source group (same-group exclusion); optional, default vid_index
    label_index     int64 (B,)             class, -1 unknown; read only by "ubernce"

Clip ``_0`` is the query, clip ``_1`` the key; the other modality's features come
from its clip ``_1``, the one aligned with the key that enters the queue. Keys the
module does not need may be absent (``"infonce"`` on RGB reads only ``rgb_*`` and
``vid_index``).

In training mode ``forward`` performs, in MoCo's order: the EMA update of the key
encoder (before the keys are computed, i.e. after the previous optimiser step),
shuffle-BN key computation, the loss, then the enqueue of the gathered keys. The
generic train loop therefore only calls ``forward``, ``backward`` and ``step``. In
eval mode neither the EMA nor the queues change.

Schedule (L949-L957, L973-L975): :func:`coclr_schedule` (in
:mod:`vidmodels.methods.coclr_schedule`, re-exported here) lists the phases; the loop
builds one ``CoCLR`` per phase and initialises it with :meth:`CoCLR.load_encoder_state`
from the previous phases' :meth:`CoCLR.encoder_state`.

Legend: B local batch, D projection dim, K queue size, N = 1 + K candidates.

Reference:
    - [0] CoCLR, Han et al., NeurIPS 2020 (seed 001, thesis chapter 4; digest §3)
    - [1] MoCo, He et al., CVPR 2020
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Literal

import torch
from torch import nn

from vidmodels import dist
from vidmodels.heads import ProjectionMLP
from vidmodels.losses import (
    info_nce,
    label_positive_mask,
    mean_positive_nce,
    moco_logits,
    multi_positive_nce,
    topk_positive_mask,
)
from vidmodels.methods.coclr_schedule import (  # moved there (this file's size); re-exported
    CoCLRPhase,
    Modality,
    Stage,
    coclr_schedule,
    mined_precision,
)
from vidmodels.methods.moco import KeyQueue, ProjectedEncoder, ema_update
from vidmodels.metrics import instance_accuracy
from vidmodels.registry import create_backbone

__all__ = ["CoCLR", "CoCLRConfig", "CoCLRPhase", "coclr_schedule"]

IN_CHANS: dict[str, int] = {"rgb": 3, "flow": 2}  # flow uses (x, y), not the zero channel
OTHER: dict[str, str] = {"rgb": "flow", "flow": "rgb"}


@dataclasses.dataclass
class CoCLRConfig:
    """Hyperparameters of one CoCLR phase. Seed 001 = thesis text; [EXT] = the authors' code (digest §3.2).

    Attributes:
        backbone: Registry name (S3D for every experiment, L971).
        modality: The encoder trained in this phase.
        stage: Positive set, see the module docstring.
        queue_size: Keys in the queue ([EXT] ``moco-k 2048``; not in the thesis).
        topk: Mined neighbours K (K=5 best, L957/L1018).
        temperature: τ ([EXT] ``moco-t 0.07``).
        momentum: EMA of the key encoder ([EXT] ``moco-m 0.999``).
        proj_hidden_dim: Hidden width of the head; None = backbone ``feature_dim``
            (1024→1024→128 for S3D, [EXT]).
        proj_dim: Output dim of the head ([EXT] ``moco-dim 128``).
        same_video_positive: Also count queue entries from the query's own source group
            as positives ([EXT] ``main_coclr.py``: the mask starts as the same-source mask;
            they are always excluded from mining). Off: P is the own key plus the mined top-K.
        own_key_drop_p: Probability per training step of removing the own key from the
            positives of rows that have others ([EXT] ``train_one_epoch``: 0.9; the thesis
            does not mention it). Metrics always count the own key.
        mining_fp32: Compute the frozen encoder's features and the mining similarities in
            float32 even under bf16 autocast (the authors train in float32; bf16 quantises
            similarities to ~2^-8 and reorders near-ties of the top-K).
        ubernce_loss: ``"mean_positive"`` (SupCon form, as in the authors' UberNCE
            code, [EXT] digest §3.1) or ``"multi_positive"`` (CoCLR's Eq. 4.2 form).
        shuffle_bn: Shuffle the key batch across ranks for the key encoder ([EXT]).
        gather_distributed: Queue the keys of all ranks.
    """

    backbone: str = "s3d"
    modality: Modality = "rgb"
    stage: Stage = "infonce"
    queue_size: int = 2048
    topk: int = 5
    temperature: float = 0.07
    momentum: float = 0.999
    proj_hidden_dim: int | None = None
    proj_dim: int = 128
    same_video_positive: bool = True
    own_key_drop_p: float = 0.9
    mining_fp32: bool = True
    ubernce_loss: Literal["mean_positive", "multi_positive"] = "mean_positive"
    shuffle_bn: bool = True
    gather_distributed: bool = True

    @classmethod
    def debug(cls, **overrides) -> CoCLRConfig:
        """``s3d_debug`` (128-d features), a 16-key queue, 32-d projections; for CPU tests."""
        return dataclasses.replace(cls(backbone="s3d_debug", queue_size=16, proj_dim=32), **overrides)

    def validate(self) -> None:
        """Raises ValueError on an inconsistent configuration."""
        if self.modality not in IN_CHANS:
            raise ValueError(f"modality must be 'rgb' or 'flow', got {self.modality!r}")
        if self.stage not in ("infonce", "coclr", "ubernce"):
            raise ValueError(f"stage must be 'infonce', 'coclr' or 'ubernce', got {self.stage!r}")
        if self.ubernce_loss not in ("mean_positive", "multi_positive"):
            raise ValueError(f"unknown ubernce_loss {self.ubernce_loss!r}")
        if not 0 <= self.topk <= self.queue_size:
            raise ValueError(f"topk must be in [0, queue_size={self.queue_size}], got {self.topk}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.own_key_drop_p <= 1.0:
            raise ValueError(f"own_key_drop_p must be in [0, 1], got {self.own_key_drop_p}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum}")


def _build_encoder(cfg: CoCLRConfig, modality: str) -> ProjectedEncoder:
    backbone = create_backbone(cfg.backbone, num_classes=0, in_chans=IN_CHANS[modality])
    hidden = cfg.proj_hidden_dim or backbone.feature_dim
    return ProjectedEncoder(backbone, ProjectionMLP(backbone.feature_dim, hidden, cfg.proj_dim))


class CoCLR(nn.Module):
    """MoCo-style InfoNCE / CoCLR / UberNCE for one modality; see the module docstring.

    Args:
        cfg: The phase's configuration.

    Raises:
        ValueError: On an invalid configuration (also from :class:`KeyQueue`).
    """

    def __init__(self, cfg: CoCLRConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder_q = _build_encoder(cfg, cfg.modality)
        self.encoder_k = copy.deepcopy(self.encoder_q).requires_grad_(False)
        self.queue = KeyQueue(cfg.queue_size, cfg.proj_dim, gather_distributed=cfg.gather_distributed)
        self.encoder_other: ProjectedEncoder | None = None
        self.queue_other: KeyQueue | None = None
        if cfg.stage == "coclr":
            self.encoder_other = _build_encoder(cfg, OTHER[cfg.modality]).requires_grad_(False).eval()
            self.queue_other = KeyQueue(
                cfg.queue_size, cfg.proj_dim, gather_distributed=cfg.gather_distributed, seed=1
            )

    def train(self, mode: bool = True) -> CoCLR:
        super().train(mode)
        if self.encoder_other is not None:
            self.encoder_other.eval()  # frozen: its BN statistics must not move either
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser should update: the query encoder and its head."""
        return list(self.encoder_q.parameters())

    @torch.no_grad()
    def momentum_update(self) -> None:
        """EMA of the key encoder towards the query encoder (``forward`` calls it in training)."""
        ema_update(self.encoder_k, self.encoder_q, self.cfg.momentum)

    def _views(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(query clip, key clip, other-modality clip aligned with the key or None)."""

        def clip(modality: str, i: int) -> torch.Tensor:
            x = batch[f"{modality}_{i}"]
            return x[:, : IN_CHANS[modality]]

        mod = self.cfg.modality
        other = clip(OTHER[mod], 1) if self.encoder_other is not None else None
        return clip(mod, 0), clip(mod, 1), other

    @torch.no_grad()
    def _keys(self, x_k: torch.Tensor) -> torch.Tensor:
        if not self.cfg.shuffle_bn:
            return self.encoder_k(x_k)
        x_shuf, unshuffle_idx = dist.shuffle_batch(x_k)
        return dist.unshuffle_batch(self.encoder_k(x_shuf), unshuffle_idx)

    @torch.no_grad()
    def _queue_positives(
        self, vid_B: torch.Tensor, labels_B: torch.Tensor | None, o_BD: torch.Tensor | None
    ) -> tuple[torch.Tensor, bool]:
        """Positive mask over the queue ``(B, K)`` and whether CoCLR mining was active."""
        cfg, queue = self.cfg, self.queue
        pos_BK = torch.zeros(vid_B.shape[0], cfg.queue_size, dtype=torch.bool, device=vid_B.device)
        if cfg.stage == "ubernce":
            if labels_B is None:
                raise ValueError("stage 'ubernce' needs 'label_index' in the batch")
            return label_positive_mask(labels_B, queue.labels), False
        if cfg.stage != "coclr":
            return pos_BK, False
        same_BK = vid_B[:, None] == queue.vid[None, :]
        mining = cfg.topk > 0 and self.queue_other.is_full
        if mining:
            sim_other_BK = o_BD.float() @ self.queue_other.keys.float().t()
            pos_BK = topk_positive_mask(sim_other_BK, cfg.topk, same_BK)
        if cfg.same_video_positive:
            pos_BK |= same_BK
        return pos_BK, mining

    @torch.no_grad()
    def _other_features(self, x_o: torch.Tensor | None) -> torch.Tensor | None:
        """The frozen other-modality encoder's keys, in float32 when ``mining_fp32``."""
        if self.encoder_other is None:
            return None
        if not self.cfg.mining_fp32:
            return self.encoder_other(x_o)
        with torch.autocast(x_o.device.type, enabled=False):
            return self.encoder_other(x_o.float()).float()

    def _loss_positives(self, pos_BN: torch.Tensor) -> torch.Tensor:
        """``pos_BN`` without the own key (column 0) on ``own_key_drop_p`` of the training steps,
        for rows that have another positive (the authors' ``mask_clone[mask_sum != 1, 0] = 0``)."""
        p = self.cfg.own_key_drop_p
        if not self.training or p <= 0 or float(torch.rand(())) >= p:
            return pos_BN
        dropped = pos_BN.clone()
        dropped[pos_BN.sum(dim=1) > 1, 0] = False
        return dropped

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One contrastive step on a batch (see the module docstring for the contract).

        Returns:
            ``loss`` (scalar with grad), and detached metrics: ``top1`` (argmax is a
            positive), ``num_positives`` (mean size of P per row, own key included),
            ``mining`` (1 when CoCLR mined positives this step), and, when mining
            with known labels, ``mined_precision`` (:func:`mined_precision`).
        """
        cfg = self.cfg
        x_q, x_k, x_o = self._views(batch)
        vid_B = batch.get("group_index", batch["vid_index"])
        labels_B = batch.get("label_index")
        q_BD = self.encoder_q(x_q)
        with torch.no_grad():
            if self.training:
                self.momentum_update()
            k_BD = self._keys(x_k)
            o_BD = self._other_features(x_o)
            # A copy: the enqueue below writes in place, and the loss's backward reads these.
            queue_KD = self.queue.keys.clone()
            queue_labels_K = self.queue.labels.clone()
            pos_BK, mining = self._queue_positives(vid_B, labels_B, o_BD)
        own_B1 = torch.ones(vid_B.shape[0], 1, dtype=torch.bool, device=vid_B.device)
        pos_BN = torch.cat([own_B1, pos_BK], dim=1)

        if cfg.stage == "infonce":
            loss = info_nce(q_BD, k_BD, queue_KD, cfg.temperature)
            logits_BN = moco_logits(q_BD.detach(), k_BD, queue_KD, cfg.temperature)
        else:
            logits_BN = moco_logits(q_BD, k_BD, queue_KD, cfg.temperature)
            use_mean = cfg.stage == "ubernce" and cfg.ubernce_loss == "mean_positive"
            loss = (mean_positive_nce if use_mean else multi_positive_nce)(logits_BN, self._loss_positives(pos_BN))

        if self.training:
            self.queue.enqueue(k_BD, vid_B, labels_B)
            if self.queue_other is not None:
                self.queue_other.enqueue(o_BD, vid_B, labels_B)
        out = {
            "loss": loss,
            "top1": instance_accuracy(logits_BN.detach(), pos_BN),
            "num_positives": pos_BN.sum(dim=1).float().mean(),
            "mining": torch.tensor(float(mining), device=loss.device),
        }
        if mining and labels_B is not None:
            precision = mined_precision(pos_BK, labels_B, queue_labels_K)
            if precision is not None:
                out["mined_precision"] = precision
        return out

    def _encoder(self, modality: str) -> ProjectedEncoder:
        if modality == self.cfg.modality:
            return self.encoder_q
        if self.encoder_other is not None and modality == OTHER[self.cfg.modality]:
            return self.encoder_other
        raise ValueError(f"this {self.cfg.stage!r} phase has no {modality!r} encoder")

    def encoder_state(self, modality: str, *, with_head: bool = True) -> dict[str, torch.Tensor]:
        """A copy of one encoder's weights, to initialise the next phase or to export.

        Args:
            modality: ``"rgb"`` or ``"flow"``.
            with_head: Keep the projection head (``backbone.*``/``head.*`` keys, for
                :meth:`load_encoder_state`); False gives the bare backbone's state,
                loadable into ``create_backbone(cfg.backbone, in_chans=...)``.

        Raises:
            ValueError: If this phase has no encoder of that modality.
        """
        state = {k: v.detach().clone() for k, v in self._encoder(modality).state_dict().items()}
        if with_head:
            return state
        return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}

    @torch.no_grad()
    def load_encoder_state(self, modality: str, state_dict: dict[str, torch.Tensor], *, strict: bool = True) -> None:
        """Loads an :meth:`encoder_state` (``with_head=True``) of a previous phase.

        The trained modality goes into the query encoder and is copied into the key
        encoder; in stage ``"coclr"`` the other modality goes into the frozen encoder.

        Raises:
            ValueError: If this phase has no encoder of that modality.
        """
        self._encoder(modality).load_state_dict(state_dict, strict=strict)
        if modality == self.cfg.modality:
            self.encoder_k.load_state_dict(self.encoder_q.state_dict())
