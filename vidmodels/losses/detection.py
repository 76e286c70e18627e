"""Per-frame detection losses: sigmoid BCE, the classification + localisation loss of fine-tuning,
and the softmax cross-entropy of detection pretraining on mixed (augmented) frames.

Legend: B batch, T frames, K classes, M mixed sources (clips) per frame.

Reference:
    - [0] Coarse-Fine Networks for Temporal Activity Detection in Videos, Kahatapitiya & Ryoo, CVPR 2021
      (seed 000 L440)
    - [1] Weakly-guided Self-supervised Pretraining for Temporal Activity Detection, Kahatapitiya et al.,
      AAAI 2023 (seed 000 L593, L646-L723); code: SSDet ``train_x3d_{charades_loc,kinetics_multigrid}.py``
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["frame_bce", "localization_loss", "mixed_source_ce", "soft_frame_ce"]

Background = Literal["none", "extra_class", "class_zero"]


def _valid(logits_BTK: torch.Tensor, labels_BTK: torch.Tensor, valid_BT: torch.Tensor | None) -> torch.Tensor:
    """Checks the shapes; returns the valid-frame mask as the logits' dtype (all ones for ``None``)."""
    if logits_BTK.ndim != 3 or labels_BTK.shape[:2] != logits_BTK.shape[:2]:
        raise ValueError(f"logits {tuple(logits_BTK.shape)} and labels {tuple(labels_BTK.shape)} must be (B, T, K)")
    if valid_BT is None:
        return logits_BTK.new_ones(logits_BTK.shape[:2])
    if valid_BT.shape != logits_BTK.shape[:2]:
        raise ValueError(f"valid {tuple(valid_BT.shape)} must be (B, T) = {tuple(logits_BTK.shape[:2])}")
    return valid_BT.to(logits_BTK.dtype)


def frame_bce(logits_BTK: torch.Tensor, labels_BTK: torch.Tensor, valid_BT: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame sigmoid BCE averaged over the valid frames and the classes.

    ``L = Σ_{b,t} m_bt Σ_k BCE(σ(z_btk), y_btk) / (K · Σ_{b,t} m_bt)``

    The localisation term of [0]; also the default detection-pretraining loss, where Volume
    Freeze's frozen frames carry all-zero label rows (background = no class on) and mixed
    frames carry soft labels in [0, 1].

    Args:
        logits_BTK: Per-frame logits.
        labels_BTK: Targets in [0, 1].
        valid_BT: 1 on real frames, 0 on padding (all valid when ``None``).

    Returns:
        Scalar loss (0 when no frame is valid).

    Raises:
        ValueError: On shapes other than equal ``(B, T, K)`` and a ``(B, T)`` mask.
    """
    m_BT = _valid(logits_BTK, labels_BTK, valid_BT)
    if labels_BTK.shape != logits_BTK.shape:
        raise ValueError(f"labels {tuple(labels_BTK.shape)} must match logits {tuple(logits_BTK.shape)}")
    bce_BTK = F.binary_cross_entropy_with_logits(logits_BTK, labels_BTK.to(logits_BTK.dtype), reduction="none")
    return (bce_BTK * m_BT[..., None]).sum() / (m_BT.sum() * logits_BTK.shape[2]).clamp_min(1.0)


def localization_loss(
    logits_BTK: torch.Tensor,
    labels_BTK: torch.Tensor,
    valid_BT: torch.Tensor | None = None,
    *,
    cls_weight: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Detection fine-tuning loss ``L = w·L_cls + (1−w)·L_loc`` with w = ½ ([0] L440, [1] L593).

    * ``L_cls = mean_{b,k} BCE(max_t σ(z_btk), max_t y_btk)``, the max over valid frames: a
      video-level multi-label term. As ``σ`` is monotone, ``max_t σ(z) = σ(max_t z)`` and it is
      computed with logits (SSDet takes the max of the logits, Coarse-Fine of the masked
      probabilities; the two agree). Clips without a valid frame are left out of it.
    * ``L_loc`` = :func:`frame_bce` over the valid frames.

    Coarse-Fine masks padding as here (probabilities times the mask, the BCE sum divided by
    ``K·Σ mask``); SSDet's ``train_x3d_charades_loc.py`` does not mask either term.

    Args:
        logits_BTK: Per-frame logits, already at the label frame rate.
        labels_BTK: Multi-hot (or soft) per-frame targets.
        valid_BT: 1 on real frames, 0 on padding (all valid when ``None``).
        cls_weight: w in [0, 1].

    Returns:
        ``(loss, {"cls": L_cls, "loc": L_loc})``, the parts detached.

    Raises:
        ValueError: On ``cls_weight`` outside [0, 1] or mismatched shapes.
    """
    if not 0.0 <= cls_weight <= 1.0:
        raise ValueError(f"cls_weight must be in [0, 1], got {cls_weight}")
    loc = frame_bce(logits_BTK, labels_BTK, valid_BT)
    keep_BT1 = _valid(logits_BTK, labels_BTK, valid_BT).bool()[..., None]
    zmax_BK = logits_BTK.masked_fill(~keep_BT1, torch.finfo(logits_BTK.dtype).min).amax(1)
    ymax_BK = labels_BTK.to(logits_BTK.dtype).masked_fill(~keep_BT1, 0.0).amax(1)
    has_B = keep_BT1.any(1).squeeze(1)
    if has_B.any():
        cls = F.binary_cross_entropy_with_logits(zmax_BK[has_B], ymax_BK[has_B])
    else:
        cls = logits_BTK.sum() * 0.0
    loss = cls_weight * cls + (1.0 - cls_weight) * loc
    return loss, {"cls": cls.detach(), "loc": loc.detach()}


def soft_frame_ce(
    logits_BTK: torch.Tensor,
    labels_BTK: torch.Tensor,
    valid_BT: torch.Tensor | None = None,
    *,
    background: Background,
) -> torch.Tensor:
    """Per-frame softmax cross-entropy with soft (mixed) labels, the pretraining option of [1].

    ``L = Σ_{b,t} m_bt · (−Σ_k q_btk log softmax(z_bt)_k) / Σ_{b,t} m_bt``

    ``labels_BTK`` rows are the γ-weighted sum of the one-hot labels of the clips mixed into the
    frame (``Σ_k y ≤ 1``); the mass ``1 − Σ_k y`` that is missing from a row is background (a
    frozen frame has an all-zero row). ``background`` says where it goes:

    * ``"extra_class"``: an extra (K+1)-th logit, so ``logits_BTK`` has K+1 columns and
      ``q = [y, 1 − Σ_k y]`` (what the thesis' "new background label" and the commented-out
      ``replace_logits(400+1)`` suggest).
    * ``"class_zero"``: added to class 0, as the SSDet code does (it collides with K400 class 0).
    * ``"none"``: dropped; rows without any label are left out of the mean.

    This is the per-frame normalised form of :func:`mixed_source_ce`; the two are equal when
    every source covers every frame (see there).

    Args:
        logits_BTK: Per-frame logits, K (+1 for ``"extra_class"``) columns.
        labels_BTK: Soft targets ``(B, T, K)``, rows summing to at most 1.
        valid_BT: 1 on real frames (all valid when ``None``).
        background: Where the background mass goes.

    Returns:
        Scalar loss (0 when no frame counts).

    Raises:
        ValueError: On an unknown ``background`` or mismatched shapes.
    """
    m_BT = _valid(logits_BTK, labels_BTK, valid_BT)
    q_BTK = labels_BTK.to(logits_BTK.dtype)
    bg_BT1 = (1.0 - q_BTK.sum(-1, keepdim=True)).clamp_min(0.0)
    if background == "extra_class":
        q_BTK = torch.cat([q_BTK, bg_BT1], dim=-1)
    elif background == "class_zero":
        q_BTK = torch.cat([q_BTK[..., :1] + bg_BT1, q_BTK[..., 1:]], dim=-1)
    elif background == "none":
        m_BT = m_BT * (q_BTK.sum(-1) > 0).to(m_BT.dtype)
    else:
        raise ValueError(f"background must be 'none', 'extra_class' or 'class_zero', got {background!r}")
    if q_BTK.shape != logits_BTK.shape:
        raise ValueError(f"logits {tuple(logits_BTK.shape)} need {q_BTK.shape[-1]} columns for background={background!r}")
    ce_BT = -(q_BTK * F.log_softmax(logits_BTK, dim=-1)).sum(-1)
    return (ce_BT * m_BT).sum() / m_BT.sum().clamp_min(1.0)


def mixed_source_ce(
    logits_BTK: torch.Tensor,
    targets_MBT: torch.Tensor,
    gammas_MBT: torch.Tensor,
    masks_MBT: torch.Tensor,
    *,
    background: Literal["class_zero", "extra_class"] = "class_zero",
) -> torch.Tensor:
    """The SSDet pretraining loss in its masked form (spec "Loss [EXT]").

    ``L = Σ_m [ Σ_{b,t} γ_mbt · CE(z_bt, y_mbt) / Σ_{b,t} mask_mbt ]``

    Each source m (the clip itself, then each clip mixed in) is a hard label per frame,
    weighted by its mixing weight γ and normalised by the number of frames where it is
    visible. With a (B·T)-wide mask for every source (no mixing, Volume Freeze, or a mix whose
    sources all cover all frames) and ``Σ_m γ_mbt = 1``, it equals :func:`soft_frame_ce` with
    ``q = Σ_m γ_m onehot(y_m)``. Otherwise it is not a per-frame mean: a source visible on
    fewer frames is up-weighted by ``B·T / Σ mask_m``. For CutMix the code's γ and masks
    carry an extra width axis; pass their mean over it.

    Args:
        logits_BTK: Per-frame logits, K (+1 for ``"extra_class"``) columns.
        targets_MBT: int64 class per source and frame, −1 for a frozen (background) frame.
        gammas_MBT: Mixing weights γ (0 where the source is absent).
        masks_MBT: 1 where the source is visible.
        background: Class of the −1 targets: 0 (the code) or K, the last column.

    Returns:
        Scalar loss.

    Raises:
        ValueError: On mismatched shapes or an unknown ``background``.
    """
    M, B, T = targets_MBT.shape
    if logits_BTK.shape[:2] != (B, T) or gammas_MBT.shape != targets_MBT.shape or masks_MBT.shape != targets_MBT.shape:
        raise ValueError(f"logits {tuple(logits_BTK.shape)} need (B, T) = {(B, T)}; gammas and masks (M, B, T)")
    if background not in ("class_zero", "extra_class"):
        raise ValueError(f"background must be 'class_zero' or 'extra_class', got {background!r}")
    bg_index = 0 if background == "class_zero" else logits_BTK.shape[2] - 1
    y_MBT = torch.where(targets_MBT < 0, torch.full_like(targets_MBT, bg_index), targets_MBT)
    logp_BTK = F.log_softmax(logits_BTK, dim=-1)
    ce_MBT = -logp_BTK.unsqueeze(0).expand(M, -1, -1, -1).gather(-1, y_MBT.unsqueeze(-1)).squeeze(-1)
    per_source_M = (gammas_MBT.to(ce_MBT.dtype) * ce_MBT).flatten(1).sum(1) / masks_MBT.flatten(1).sum(1).clamp_min(1)
    return per_source_M.sum()
