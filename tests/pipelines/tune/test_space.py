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


NAMED = [(m, name, variant) for m, spec in sorted(METHODS.items()) if spec.sweep is not None
         for name in spec.sweep.spaces for variant in spec.variants]


@pytest.mark.parametrize("method,name,variant", NAMED)
def test_every_value_of_every_named_space_builds_the_methods_phases(method, name, variant):
    """Each value of a named space (the others at their first) gives a job whose phases and
    recipes build: e.g. every prediction step of DPC's ablation fits each variant's blocks."""
    spec = get_method(method)
    space = spec.sweep.spaces[name]
    base = spec.variants[variant]()
    check_space(space, base)
    first = {k: d.example() for k, d in space.items()}
    for key, domain in space.items():
        for value in (domain.values if isinstance(domain, Choice) else (domain.example(),)):
            job = apply_trial(base, {**first, key: value})
            for phase in spec.schedule(job, None):
                spec.recipe(job, phase)


def test_a_name_picks_the_methods_space_and_keys_edit_it():
    from pipelines.tune.space import select_space

    sweep = get_method("memdpc").sweep
    space, rest = select_space("memdpc", sweep, ["ablation", "optim.lr=choice(0.1)"])
    assert set(space) == {"schedule.pred_steps", "method.memory_size", "optim.lr", "optim.weight_decay"}
    assert space["method.memory_size"] == Choice((512, 1024, 2048)) and rest == ["optim.lr=choice(0.1)"]
    assert select_space("memdpc", sweep, ["default"])[0] == dict(sweep.space)
    assert select_space("memdpc", sweep, [], use_default=False)[0] == {}
    with pytest.raises(ConfigError, match="has no space 'nope'; its spaces: default, ablation"):
        select_space("memdpc", sweep, ["nope"])
    with pytest.raises(ConfigError, match="one space at a time"):
        select_space("memdpc", sweep, ["default", "ablation"])
