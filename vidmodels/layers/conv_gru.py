"""Convolutional GRU, the temporal aggregator ``g`` of DPC and MemDPC.

Legend: B batch, T time steps, C input channels, D hidden channels, H/W spatial.

Reference:
    - [0] Video Representation Learning by Dense Predictive Coding (DPC), Han et al., ICCV-W 2019
    - [1] Memory-augmented Dense Predictive Coding (MemDPC), Han et al., ECCV 2020
    - [2] Delving Deeper into Convolutional Networks for Learning Video Representations, Ballas et al., ICLR 2016
"""

from __future__ import annotations

import torch
from torch import nn


class ConvGRUCell(nn.Module):
    """One ConvGRU step; with ``kernel_size=1`` the weights are shared over positions.

    ``u = σ(W_u[x, h])``, ``r = σ(W_r[x, h])``,
    ``h' = (1 − u) ⊙ h + u ⊙ tanh(W_o[x, r ⊙ h])``.

    Args:
        input_dim: Channels C of the input map.
        hidden_dim: Channels D of the hidden state.
        kernel_size: Spatial kernel of the gate convolutions (DPC uses 1).
    """

    def __init__(self, input_dim: int, hidden_dim: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        pad = kernel_size // 2
        self.reset_gate = nn.Conv2d(input_dim + hidden_dim, hidden_dim, kernel_size, padding=pad)
        self.update_gate = nn.Conv2d(input_dim + hidden_dim, hidden_dim, kernel_size, padding=pad)
        self.out_gate = nn.Conv2d(input_dim + hidden_dim, hidden_dim, kernel_size, padding=pad)
        for conv in (self.reset_gate, self.update_gate, self.out_gate):
            nn.init.orthogonal_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x_BCHW: torch.Tensor, h_BDHW: torch.Tensor | None = None) -> torch.Tensor:
        """Advances one step.

        Args:
            x_BCHW: Input at this step.
            h_BDHW: Previous hidden state; zeros when ``None``.

        Returns:
            The new hidden state ``(B, D, H, W)``.
        """
        if h_BDHW is None:
            B, _, H, W = x_BCHW.shape
            h_BDHW = x_BCHW.new_zeros(B, self.hidden_dim, H, W)
        xh = torch.cat([x_BCHW, h_BDHW], dim=1)
        u = torch.sigmoid(self.update_gate(xh))
        r = torch.sigmoid(self.reset_gate(xh))
        o = torch.tanh(self.out_gate(torch.cat([x_BCHW, r * h_BDHW], dim=1)))
        return (1.0 - u) * h_BDHW + u * o


class ConvGRU(nn.Module):
    """Multi-layer ConvGRU over a sequence of feature maps.

    Dropout is applied to each layer's hidden state after every step, as DPC does
    (p=0.1, seed 001 L408).

    Args:
        input_dim: Channels C of the input maps.
        hidden_dim: Channels D of every layer's hidden state.
        kernel_size: Spatial kernel of the gates.
        num_layers: Stacked GRU layers (DPC uses 1).
        dropout: Dropout probability on hidden states.
    """

    def __init__(
        self, input_dim: int, hidden_dim: int, *, kernel_size: int = 1, num_layers: int = 1, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.cells = nn.ModuleList(
            ConvGRUCell(input_dim if i == 0 else hidden_dim, hidden_dim, kernel_size) for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x_BTCHW: torch.Tensor, h_LBDHW: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs the recurrence over T steps (a recurrence is sequential by nature).

        Args:
            x_BTCHW: Input sequence.
            h_LBDHW: Initial hidden states of the L layers; zeros when ``None``.

        Returns:
            ``(out_BTDHW, h_LBDHW)``: the last layer's states at every step and the
            final hidden state of every layer.
        """
        hidden = [None] * len(self.cells) if h_LBDHW is None else list(h_LBDHW.unbind(0))
        seq = x_BTCHW.unbind(1)
        for i, cell in enumerate(self.cells):
            h = hidden[i]
            outs = []
            for x_BCHW in seq:
                h = self.dropout(cell(x_BCHW, h))
                outs.append(h)
            hidden[i] = h
            seq = outs
        return torch.stack(seq, dim=1), torch.stack(hidden, dim=0)
