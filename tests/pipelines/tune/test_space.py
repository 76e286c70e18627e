"""Search spaces: the ``--space`` text form, typed application to a job, and every method's default space."""

from __future__ import annotations

import pytest

from pipelines.config import ConfigError
from pipelines.methods import METHODS, get_method
from pipelines.tune.space import (Choice, Grid, LogUniform, RandInt, Uniform, apply_trial, check_space, format_value,
                                  parse_domain, parse_space)


@pytest.mark.parametrize("text, domain", [
    ("loguniform(1e-4, 1e-2)", LogUniform(1e-4, 1e-2)),
    ("uniform(0,0.5)", Uniform(0.0, 0.5)),
    ("randint(1, 10)", RandInt(1, 10)),
    ("choice(1, 5, 50)", Choice((1, 5, 50))),
    ('choice(adam, "a,b", true, [8, 16])', Choice(("adam", "a,b", True, [8, 16]))),
    ("grid(3e-3, 0)", Grid((0.003, 0))),
])
def test_parse_domain(text, domain):
    assert parse_domain(text) == domain


@pytest.mark.parametrize("text", ["normal(0, 1)", "loguniform(0, 1)", "uniform(1)", "choice()", "0.1",
                                  "randint(a, b)"])
def test_parse_domain_refuses(text):
    with pytest.raises(ConfigError):
        parse_domain(text)


def test_parse_space_needs_key_and_domain():
    assert parse_space(["optim.lr=loguniform(1e-4,1e-2)"]) == {"optim.lr": LogUniform(1e-4, 1e-2)}
    with pytest.raises(ConfigError, match="key=domain"):
        parse_space(["loguniform(1e-4,1e-2)"])


def test_apply_trial_goes_through_the_typed_parser():
    job = get_method("coclr").variants["debug"]()
    out = apply_trial(job, {"optim.lr": 0.003, "method.topk": 5, "data.recipe_overrides": ("clip_len=16",),
                            "scaling.use_gpu": False})
    assert out.optim.lr == 0.003 and out.method.topk == 5 and isinstance(out.method.topk, int)
    assert out.data.recipe_overrides == ("clip_len=16",) and out.scaling.use_gpu is False
    assert format_value(True) == "true" and format_value((1, 2)) == "[1, 2]"


def test_check_space_refuses_unknown_keys_and_bad_values_with_a_suggestion():
    job = get_method("supervised").variants["debug"]()
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        check_space({"optim.lrr": LogUniform(1e-4, 1e-2)}, job)
    with pytest.raises(ConfigError, match="loop.epochs"):
        check_space({"loop.epochs": Choice((1, "many"))}, job)
    with pytest.raises(ConfigError, match="empty search space"):
        check_space({}, job)


@pytest.mark.parametrize("method", sorted(m for m, spec in METHODS.items() if spec.sweep is not None))
def test_every_default_space_fits_its_method(method):
    spec = get_method(method)
    check_space(spec.sweep.space, spec.variants["debug"]())
    assert spec.sweep.mode in ("max", "min") and spec.sweep.metric
