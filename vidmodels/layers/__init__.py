"""Building blocks shared by the backbones and methods (pure PyTorch)."""

from vidmodels.layers.conv_gru import ConvGRU, ConvGRUCell
from vidmodels.layers.conv_norm_act import ConvNormAct3d
from vidmodels.layers.drop import DropPath
from vidmodels.layers.fine_fusion import (
    MultiStageFusion,
    gaussian_aggregate,
    gaussian_weights,
)
from vidmodels.layers.grid_pool import (
    ConfidenceNet,
    grid_pool,
    grid_pool_positions,
    grid_unpool,
)
from vidmodels.layers.squeeze_excite import SqueezeExcite3d, round_width

__all__ = [
    "ConfidenceNet",
    "ConvGRU",
    "ConvGRUCell",
    "ConvNormAct3d",
    "DropPath",
    "MultiStageFusion",
    "SqueezeExcite3d",
    "gaussian_aggregate",
    "gaussian_weights",
    "grid_pool",
    "grid_pool_positions",
    "grid_unpool",
    "round_width",
]
