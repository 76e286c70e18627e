"""Heads and layers: shapes, parameter counts, and ConvGRU against a per-step reference."""

from __future__ import annotations

import pytest
import torch

from vidmodels.heads import (
    ConvPredictor,
    LinearClassifier,
    PerFrameHead,
    ProjectionMLP,
    TemporalClassifier,
    interpolate_time,
)
from vidmodels.layers import ConvGRU, ConvGRUCell, SqueezeExcite3d, round_width

torch.set_num_threads(1)


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_projection_mlp_is_coclr_head() -> None:
    head = ProjectionMLP()  # 1024 -> 1024 -> 128
    assert _n_params(head) == 1024 * 1024 + 1024 + 1024 * 128 + 128
    z_BD = torch.randn(3, 1024)
    assert head(z_BD).shape == (3, 128)
    # A feature map is mean-pooled first (CoCLR pools S3D's 1024x4x4x4 output).
    fmap = z_BD[:, :, None, None, None].expand(3, 1024, 2, 2, 2)
    torch.testing.assert_close(head(fmap), head(z_BD))


def test_linear_classifier_dropout_and_identity() -> None:
    clf = LinearClassifier(16, 4, drop_rate=0.5)
    z_BD = torch.randn(8, 16)
    assert clf(z_BD).shape == (8, 4)
    clf.eval()
    torch.testing.assert_close(clf(z_BD), clf.fc(z_BD))  # no dropout at eval
    assert LinearClassifier(16, 0)(z_BD) is z_BD


def test_temporal_classifier_per_frame_logits() -> None:
    head = TemporalClassifier(24, 7, drop_rate=0.0)
    x_BCTHW = torch.randn(2, 24, 4, 3, 3)
    logits_BTK = head(x_BCTHW)
    assert logits_BTK.shape == (2, 4, 7)
    # Step t only sees step t.
    torch.testing.assert_close(logits_BTK[:, 1], head.fc(x_BCTHW[:, :, 1].mean((2, 3))))
    assert head(x_BCTHW, num_frames=40).shape == (2, 40, 7)


def test_conv_predictor_shape() -> None:
    assert ConvPredictor(8, 16, 32)(torch.randn(2, 8, 4, 4)).shape == (2, 32, 4, 4)


def test_conv_gru_matches_step_by_step_cell() -> None:
    torch.manual_seed(0)
    gru = ConvGRU(6, 5, num_layers=2, dropout=0.0)
    x_BTCHW = torch.randn(2, 3, 6, 4, 4)
    out_BTDHW, h_LBDHW = gru(x_BTCHW)
    assert out_BTDHW.shape == (2, 3, 5, 4, 4) and h_LBDHW.shape == (2, 2, 5, 4, 4)
    h0 = h1 = None
    for t in range(3):
        h0 = gru.cells[0](x_BTCHW[:, t], h0)
        h1 = gru.cells[1](h0, h1)
        torch.testing.assert_close(out_BTDHW[:, t], h1)
    torch.testing.assert_close(h_LBDHW[0], h0)
    # Resuming from the returned state continues the recurrence.
    out2, _ = gru(x_BTCHW[:, 2:], gru(x_BTCHW[:, :2])[1])
    torch.testing.assert_close(out2[:, 0], out_BTDHW[:, 2])


def test_conv_gru_1x1_shares_weights_over_positions() -> None:
    cell = ConvGRUCell(4, 3, kernel_size=1)
    x_BCHW, h_BDHW = torch.randn(1, 4, 3, 3), torch.randn(1, 3, 3, 3)
    perm = torch.randperm(9)

    def shuffle(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(2)[..., perm].reshape(t.shape)

    torch.testing.assert_close(cell(shuffle(x_BCHW), shuffle(h_BDHW)), shuffle(cell(x_BCHW, h_BDHW)))


def test_conv_gru_hidden_dropout_only_in_training() -> None:
    gru = ConvGRU(4, 4, dropout=0.5)
    x_BTCHW = torch.randn(2, 3, 4, 2, 2)
    gru.eval()
    torch.testing.assert_close(gru(x_BTCHW)[0], gru(x_BTCHW)[0])


@pytest.mark.parametrize(("channels", "expected"), [(54, 8), (108, 8), (216, 16), (432, 32)])
def test_x3d_se_widths(channels: int, expected: int) -> None:
    assert round_width(channels, 1 / 16) == expected
    se = SqueezeExcite3d(channels)
    assert se.fc1.out_channels == expected
    assert se(torch.randn(1, channels, 2, 2, 2)).shape == (1, channels, 2, 2, 2)


def test_per_frame_head_shapes_pre_logits_and_reset() -> None:
    head = PerFrameHead(24, 7, hidden_dim=32, drop_rate=0.0)
    assert head.fc1.bias is None  # X3D head_proj has no bias
    x_BCTHW = torch.randn(2, 24, 4, 3, 3)
    logits_BTK = head(x_BCTHW)
    assert logits_BTK.shape == (2, 4, 7)
    z_BTD = head(x_BCTHW, pre_logits=True)
    assert z_BTD.shape == (2, 4, 32) and (z_BTD >= 0).all()  # after the ReLU
    torch.testing.assert_close(head.fc2(z_BTD), logits_BTK)
    # Step t only sees step t (spatial mean, then per-step layers).
    torch.testing.assert_close(logits_BTK[:, 2], head.fc2(torch.relu(head.fc1(x_BCTHW[:, :, 2].mean((2, 3))))))
    assert head(x_BCTHW, num_frames=40).shape == (2, 40, 7)
    fc1 = head.fc1.weight.clone()
    head.reset_classifier(157)
    assert head(x_BCTHW).shape == (2, 4, 157) and head.fc2.in_features == 32
    torch.testing.assert_close(head.fc1.weight, fc1)  # only fc2 is replaced


def test_interpolate_time_matches_the_authors_code() -> None:
    logits_BTK = torch.tensor([[[0.0, 1.0], [10.0, -1.0]]])  # T = 2 steps -> 20 frames
    out_BTK = interpolate_time(logits_BTK, 20)
    # SSDet / Coarse-Fine: F.interpolate(logits_BKT, tl, mode='linear'), i.e. align_corners=False.
    code = torch.nn.functional.interpolate(logits_BTK.transpose(1, 2), 20, mode="linear").transpose(1, 2)
    torch.testing.assert_close(out_BTK, code)
    # Each step covers 10 frames and sits at their centre (frame 4.5): the outer half spans are flat.
    torch.testing.assert_close(out_BTK[0, :5], logits_BTK[0, :1].expand(5, 2))
    torch.testing.assert_close(out_BTK[0, 15:], logits_BTK[0, 1:].expand(5, 2))
    torch.testing.assert_close(out_BTK[0, 9] + out_BTK[0, 10], logits_BTK[0].sum(0))  # symmetric about the middle
    # align_corners=True (Coarse-Fine train_fine.py): first/last step on the first/last frame, linear between.
    ends_BTK = interpolate_time(logits_BTK, 19, align_corners=True)
    torch.testing.assert_close(ends_BTK[0, :, 0], torch.linspace(0.0, 10.0, 19))
    assert interpolate_time(logits_BTK[:, :1], 5).shape == (1, 5, 2)
    assert interpolate_time(logits_BTK, 2) is logits_BTK
