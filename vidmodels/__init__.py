"""vidmodels: the model zoo of vidray (pure PyTorch; no Ray or MLflow; process-group code only in dist.py).

Usage::

    import vidmodels
    net = vidmodels.create_backbone("s3d", num_classes=0)   # headless, 1024-d embedding
    vidmodels.list_backbones()
"""

from vidmodels import backbones as _backbones  # noqa: F401  (registers the families)
from vidmodels.registry import create_backbone, get_model_info, list_backbones, register

__all__ = ["create_backbone", "list_backbones", "register", "get_model_info"]
