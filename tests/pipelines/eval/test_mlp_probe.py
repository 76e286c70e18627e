"""The MLP (non-linear) probe: it fits what a linear probe cannot, and runs in ``run_protocols``."""

import numpy as np

from pipelines.eval.protocols import Features, linear_probe, mlp_probe


def _xor(n: int, seed: int) -> Features:
    """Two classes by the sign of x0 * x1 (6 more uninformative dimensions): not linearly separable."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 8)).astype(np.float32)
    labels = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    return Features([str(i) for i in range(n)], labels, x)


def test_mlp_probe_fits_xor_where_the_linear_probe_cannot():
    train, test = _xor(400, 0), _xor(200, 1)
    mlp = mlp_probe(train, test, 2, epochs=300, lr=1e-2, dropout=0.0)
    linear = linear_probe(train, test, 2, epochs=300)
    assert mlp["top1"] > 90 and linear["top1"] < 70
    assert mlp["confusion"].sum() == 200 and set(mlp) == set(linear)


def test_default_dropout_is_the_thesis_value_and_still_learns():
    train, test = _xor(400, 2), _xor(200, 3)
    assert mlp_probe(train, test, 2)["top1"] > 75  # the defaults: dropout 0.9 (seed 001 L707), lr 1e-2
