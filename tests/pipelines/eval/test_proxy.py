"""The kNN / R@1 proxy hook: its scores against a reference, and the hook on tiny models of each method (no Ray)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipelines.eval import proxy
from pipelines.eval.proxy import KnnProxy, ProxyConfig, knn_proxy, knn_scores
from pipelines.io import manifest
from tests.media import make_video


def test_knn_scores_against_a_loop():
    torch.manual_seed(0)
    q, g = F.normalize(torch.randn(7, 5), dim=1), F.normalize(torch.randn(11, 5), dim=1)
    qy, gy = torch.randint(0, 3, (7,)), torch.randint(0, 3, (11,))
    scores = knn_scores(q, qy, g, gy, k=4)
    hits_knn = hits_r1 = 0
    for i in range(7):
        sims = [(float(q[i] @ g[j]), j) for j in range(11)]
        top = sorted(sims, reverse=True)[:4]
        votes = [0.0, 0.0, 0.0]
        for s, j in top:
            votes[int(gy[j])] += s
        hits_knn += max(range(3), key=votes.__getitem__) == int(qy[i])
        hits_r1 += int(gy[top[0][1]]) == int(qy[i])
    assert scores["knn_top1"] == pytest.approx(100 * hits_knn / 7)
    assert scores["retrieval_r1"] == pytest.approx(100 * hits_r1 / 7)


def test_knn_scores_leave_one_out_never_retrieves_the_query_itself():
    x = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    y = torch.tensor([0, 1, 1, 0])  # each video's nearest other has the other class
    assert knn_scores(x, y, x, y, k=1, leave_one_out=True)["retrieval_r1"] == 0.0
    assert knn_scores(x, y, x, y, k=1)["retrieval_r1"] == 100.0  # itself
    with pytest.raises(ValueError, match="gallery"):
        knn_scores(x[:1], y[:1], x[:1], y[:1], k=1, leave_one_out=True)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> str:
    """8 labelled videos (2 classes x 2 per split) and one unlabelled, in a hand-written manifest."""
    root = tmp_path_factory.mktemp("proxy")
    rows = []
    for i in range(9):
        split, label = ("train" if i < 4 else "test"), (None if i == 8 else i % 2)
        path = make_video(root / f"v{i}.mp4", 30, h=72, w=96, seed=i % 2)
        rows.append({"video_id": f"v{i}", "uri": path, "label": None if label is None else f"c{label}",
                     "label_index": label, "split": split, "num_frames": 30, "fps": 25.0, "width": 96,
                     "height": 72, "codec": "h264", "segments": [], "group_id": f"g{i}"})
    manifest.write_table(manifest.to_table(rows, manifest.MANIFEST_SCHEMA), str(root / manifest.MANIFEST_NAME))
    return str(root)


def _hook_of(method: str, job_edits: dict, data: str):
    """The ``validate`` hook of a method's debug job on ``data`` (its first phase) and a tiny model of it."""
    import dataclasses

    from pipelines.methods import get_method

    spec = get_method(method)
    job = spec.variants["debug"]()
    job = dataclasses.replace(job, data=dataclasses.replace(job.data, manifest=data), **job_edits)
    phase = spec.phases(job)[0]
    return spec.validate(job, phase), spec.build(job, phase, {}).eval()


@pytest.mark.parametrize("method", ["coclr", "dpc", "memdpc"])
def test_the_hook_of_each_self_supervised_method_returns_finite_scores(method, labelled):
    hook, model = _hook_of(method, {}, labelled)
    assert isinstance(hook, KnnProxy) and hook.every == 1
    with torch.no_grad():
        out = hook(model, 1, torch.device("cpu"))
    assert {"knn_top1", "retrieval_r1", "proxy_videos", "proxy_epoch"} <= set(out)
    assert all(math.isfinite(v) for v in out.values())
    assert 0 <= out["knn_top1"] <= 100 and out["proxy_videos"] == 4  # the unlabelled test video is left out


def test_the_hook_is_off_at_every_zero_and_repeats_its_values_between_evaluations(labelled):
    hook, model = _hook_of("coclr", {"proxy": ProxyConfig(every=0)}, labelled)
    assert hook is None
    hook, model = _hook_of("coclr", {"proxy": ProxyConfig(every=2, limit=2, k=1)}, labelled)
    views = proxy.subset_views(hook.manifest, "train", 2, hook.recipe)[0]
    assert views.shape == (2, 8, 64, 64, 3)  # the debug recipe's clip length and crop, evenly chosen rows
    with torch.no_grad():
        first = hook(model, 1, torch.device("cpu"))  # nothing measured yet in this process: it evaluates
        torch.nn.init.normal_(next(model.encoder_q.backbone.parameters()))
        assert hook(model, 3, torch.device("cpu")) == first  # held
        assert hook(model, 4, torch.device("cpu"))["proxy_epoch"] == 4


def test_same_split_is_leave_one_out(labelled):
    from pipelines.methods.coclr import proxy_encoder, recipe

    _, model = _hook_of("coclr", {}, labelled)
    loo = knn_proxy(ProxyConfig(every=1, query_split="train", gallery_split="train", k=1), labelled,
                    recipe(*_job_phase()), "rgb", proxy_encoder)
    with torch.no_grad():
        out = loo(model, 1, torch.device("cpu"))
    # Two clips per class made from one seed: each one's nearest other video is its twin.
    assert out["retrieval_r1"] == 100.0 and out["proxy_videos"] == 4


def _job_phase():
    from pipelines.methods import get_method

    spec = get_method("coclr")
    job = spec.variants["debug"]()
    return job, spec.phases(job)[0]
