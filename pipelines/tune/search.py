"""The sweep's search algorithm (``jobs/tune.py --search``): Tune's random search or Optuna's TPE.

- ``random`` (default): Tune's ``BasicVariantGenerator`` samples each trial's values
  independently (``grid`` domains run every value);
- ``optuna``: Tune's ``OptunaSearch`` (a seeded TPE sampler) proposes each trial's values
  from the metric the trials before it reported; Tune converts the space's domains
  (``param_space``) to Optuna distributions. It cannot search a ``grid`` domain, and PBT
  explores the space by itself: :func:`check_search` refuses both before anything starts.

Both hold their state in the searcher, which Tune saves with the experiment and brings back
on ``Tuner.restore`` (``--resume``). ``optuna`` is imported only when that search is built.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from pipelines.config import ConfigError
from pipelines.tune.space import Choice, Domain, Grid

SEARCHES = ("random", "optuna")


def check_search(search: str, scheduler: str, space: Mapping[str, Domain]) -> None:
    """Refuse a search that cannot run with this scheduler and space.

    Raises:
        ConfigError: an unknown search; ``optuna`` with a ``grid`` domain, with ``--scheduler pbt``,
            or not installed. The message names the fix.
    """
    if search not in SEARCHES:
        raise ConfigError(f"unknown search {search!r}; choose one of {', '.join(SEARCHES)}")
    if search != "optuna":
        return
    grids = [key for key, domain in space.items() if isinstance(domain, Grid)]
    if grids:
        raise ConfigError(f"--search optuna cannot search grid domains ({', '.join(grids)}): give them as "
                          f"choice(...) instead, or use --search random")
    sequences = [key for key, domain in space.items() if isinstance(domain, Choice)
                 and any(isinstance(v, (list, tuple, dict)) for v in domain.values)]
    if sequences:
        raise ConfigError(f"--search optuna draws only numbers, strings and booleans, and {', '.join(sequences)} "
                          f"chooses among sequences: use --search random for it, or fix it with --set")
    if scheduler == "pbt":
        raise ConfigError("--scheduler pbt explores the space by itself and takes no --search optuna: use "
                          "--search random with pbt, or --scheduler asha|hyperband with optuna")
    if importlib.util.find_spec("optuna") is None:
        raise ConfigError("--search optuna needs the optuna package: pip install optuna (see pyproject.toml)")


def make_search(search: str, *, metric: str, mode: str, seed: int | None, max_concurrent: int) -> Any:
    """Tune's searcher for ``search``, running at most ``max_concurrent`` trials at once.

    ``random``: ``BasicVariantGenerator(random_state=seed, max_concurrent=...)``, as Tune ignores
    ``TuneConfig.max_concurrent_trials`` beside it. ``optuna``: ``OptunaSearch`` seeded with
    ``seed``, in a ``ConcurrencyLimiter``; Tune hands it the space (``param_space``).
    """
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    if search == "random":
        return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)
    if search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(metric=metric, mode=mode, seed=seed), max_concurrent=max_concurrent)
    raise ConfigError(f"unknown search {search!r}; choose one of {', '.join(SEARCHES)}")
