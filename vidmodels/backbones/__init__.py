"""Backbone families; importing this package registers them."""

from vidmodels.backbones import dpc_context, resnet3d, s3d, vit, x3d  # noqa: F401
from vidmodels.backbones import coarse_fine  # noqa: F401,E402  (after x3d: its streams are X3Ds)
