"""Building blocks shared by the backbones and methods (pure PyTorch)."""

from vidmodels.layers.conv_gru import ConvGRU, ConvGRUCell
from vidmodels.layers.conv_norm_act import ConvNormAct3d
from vidmodels.layers.drop import DropPath
from vidmodels.layers.squeeze_excite import SqueezeExcite3d, round_width

__all__ = ["ConvGRU", "ConvGRUCell", "ConvNormAct3d", "DropPath", "SqueezeExcite3d", "round_width"]
