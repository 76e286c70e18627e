import torch

from vidmodels.methods import Classifier, ClassifierConfig, build_method
from vidmodels.registry import create_backbone


def test_classifier_trains_and_loads_a_registered_backbone():
    model = build_method("classifier", ClassifierConfig(backbone="s3d_debug", num_classes=4))
    batch = {"rgb": torch.randn(2, 3, 8, 64, 64), "label_index": torch.tensor([0, 3])}
    out = model(batch)
    out["loss"].backward()
    assert out["loss"].item() > 0 and 0.0 <= out["top1"].item() <= 1.0
    assert all(p.grad is not None for p in model.head.parameters())
    encoder = create_backbone("s3d_debug", num_classes=0)
    model.load_backbone_state(encoder.state_dict())
    assert torch.equal(next(iter(model.backbone.state_dict().values())), next(iter(encoder.state_dict().values())))
    assert isinstance(model, Classifier) and model.logits(batch["rgb"]).shape == (2, 4)
