"""Backbone families; importing this package registers them."""

from vidmodels.backbones import dpc_context, resnet3d, s3d, vit, x3d  # noqa: F401
