"""vidmodels.dist and the key queue under 2 gloo processes, against the single-process result.

The two workers are spawned once per module (a few seconds); each writes what it saw to
a file that the tests below compare with single-process computations.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from vidmodels import dist
from vidmodels.methods import CoCLR, CoCLRConfig, KeyQueue

WORLD, LOCAL, QUEUE, DIM, STEPS = 2, 3, 10, 4, 5  # 5 x 6 = 30 keys through a 10-slot queue


def _global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    n = WORLD * LOCAL
    keys = torch.nn.functional.normalize(torch.randn(n, DIM, generator=gen), dim=1)
    return keys, torch.arange(n) + 100 * step, torch.randint(-1, 5, (n,), generator=gen)


def _method_batch(step: int, rank: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + 10 * step + rank)
    batch = {k: torch.randn(2, 3, 8, 32, 32, generator=gen) for k in ("rgb_0", "rgb_1", "flow_0", "flow_1")}
    batch["vid_index"] = torch.arange(2) + 10 * step + 2 * rank
    batch["label_index"] = torch.zeros(2, dtype=torch.long)
    return batch


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        res: dict[str, object] = {"rank": dist.rank(), "world_size": dist.world_size(), "is_dist": dist.is_dist()}
        queue = KeyQueue(QUEUE, DIM)
        local = slice(rank * LOCAL, (rank + 1) * LOCAL)
        for step in range(STEPS):
            keys, vid, labels = _global_batch(step)
            queue.enqueue(keys[local], vid[local], labels[local])
        res["queue"] = {k: v.clone() for k, v in queue.state_dict().items()}

        x = (torch.arange(LOCAL * 2, dtype=torch.float64).view(LOCAL, 2) + 100 * rank).requires_grad_()
        y = dist.gather(x)
        weights = torch.arange(y.numel(), dtype=torch.float64).view_as(y) * (rank + 1)
        (y * weights).sum().backward()
        res["gathered"], res["grad"] = y.detach(), x.grad

        torch.manual_seed(rank)  # different local RNG: the permutation must still come from rank 0
        shuffled, unshuffle_idx = dist.shuffle_batch(x.detach())
        res["shuffled"], res["unshuffled"] = shuffled, dist.unshuffle_batch(shuffled, unshuffle_idx)

        torch.manual_seed(0)  # same initial weights on both ranks, as DDP would broadcast
        model = CoCLR(CoCLRConfig.debug(stage="coclr", queue_size=8)).train()
        for step in range(2):
            model(_method_batch(step, rank))["loss"].backward()
        res["method_queue"] = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("queue")}
        torch.save(res, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_helpers_are_identities_without_a_process_group() -> None:
    assert not dist.is_dist() and dist.rank() == 0 and dist.world_size() == 1
    x = torch.randn(3, 2, requires_grad=True)
    assert dist.gather(x) is x and dist.gather_nograd(x) is x and dist.broadcast(x) is x
    shuffled, idx = dist.shuffle_batch(x)
    assert shuffled is x and idx.tolist() == [0, 1, 2] and dist.unshuffle_batch(x, idx) is x


@pytest.mark.dist
@pytest.mark.timeout(120)
def test_queue_equals_single_process_result(rank_results) -> None:
    reference = KeyQueue(QUEUE, DIM)
    for step in range(STEPS):
        reference.enqueue(*_global_batch(step))
    assert reference.is_full and int(reference.ptr) == (STEPS * WORLD * LOCAL) % QUEUE
    for res in rank_results:
        assert (res["rank"], res["world_size"], res["is_dist"]) == (rank_results.index(res), WORLD, True)
        for name, value in reference.state_dict().items():
            torch.testing.assert_close(res["queue"][name], value, msg=name)


@pytest.mark.dist
def test_gather_concatenates_in_rank_order_and_gradients_flow(rank_results) -> None:
    full = torch.cat([torch.arange(LOCAL * 2, dtype=torch.float64).view(LOCAL, 2) + 100 * r for r in range(WORLD)])
    base = torch.arange(full.numel(), dtype=torch.float64).view_as(full)
    for rank, res in enumerate(rank_results):
        torch.testing.assert_close(res["gathered"], full)
        # d/dx_rank of Σ_r (r + 1) <w, gather(x)> = (1 + 2) w[rank's rows]
        torch.testing.assert_close(res["grad"], 3 * base[rank * LOCAL : (rank + 1) * LOCAL])


@pytest.mark.dist
def test_shuffle_batch_permutes_across_ranks_and_unshuffles(rank_results) -> None:
    full = torch.cat([res["unshuffled"] for res in rank_results])
    shuffled = torch.cat([res["shuffled"] for res in rank_results])
    for rank, res in enumerate(rank_results):
        torch.testing.assert_close(res["unshuffled"], full[rank * LOCAL : (rank + 1) * LOCAL])
    assert sorted(shuffled[:, 0].tolist()) == sorted(full[:, 0].tolist())  # one global permutation


@pytest.mark.dist
def test_method_queues_are_identical_on_all_ranks(rank_results) -> None:
    q0, q1 = (res["method_queue"] for res in rank_results)
    for name in q0:
        torch.testing.assert_close(q0[name], q1[name], msg=name)
    vids = [_method_batch(s, r)["vid_index"] for s in range(2) for r in range(WORLD)]
    assert q0["queue.vid"].tolist() == torch.cat(vids).tolist()  # steps in order, ranks in order
    assert bool(q0["queue.full"]) and bool(q0["queue_other.full"])
