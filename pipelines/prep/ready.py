"""Before training: the dataset a job names exists and holds what its recipes read, or is made.

:func:`ensure_dataset` runs on the driver before any Ray Train worker starts, so a wrong
setup is refused with a message that names the command that fixes it (never Ray Data's
"The dataset is empty."):

* no manifest at ``data.manifest``: with ``data.synthetic`` set (every method's
  ``debug`` variant), the tiny synthetic set is rendered, ingested there, and given the
  optical flow its recipes need; otherwise :class:`DatasetNotReady` names
  ``jobs/ingest.py`` (and ``jobs/make_synthetic.py`` for a synthetic set);
* no rows in ``data.split``: refused, listing the splits the manifest has;
* a column a recipe requires (``flow_uri``) missing or empty in the split: refused with
  the recipe's fix (``jobs/flow.py``), or computed for a synthetic debug set. Rows that
  lack it while others have it are excluded and counted at build time.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

from pipelines.io import manifest, storage

log = logging.getLogger(__name__)


class DatasetNotReady(ValueError):
    """The dataset a job names cannot be trained on as it is; the message says how to fix it."""


def make_synthetic(url: str, preset_name: str, fmt: str = "ucf101") -> None:
    """Render the ``preset_name`` synthetic set beside ``url`` and ingest its ``fmt`` part at ``url``:
    ``ucf101`` (single-action clips) or ``charades`` (multi-action videos with segments). What
    else the recipes need, e.g. flow, is made by their ``Required.make``."""
    from pipelines.prep.ingest import IngestConfig, run_ingest
    from pipelines.prep.synthetic import generate, preset

    if storage.protocol(url) != "file":
        raise DatasetNotReady(f"no manifest at {url}; synthetic data is made on a local path only "
                              f"(ingest one with jobs/ingest.py --dst {url})")
    src = os.path.join(os.path.dirname(os.path.abspath(url)), f"synthetic-{preset_name}")
    print(f"no manifest at {url}: rendering the {preset_name!r} synthetic set into {src} and ingesting it",
          flush=True)
    generate(src, preset(preset_name), workers=1, progress=False)
    if fmt not in ("ucf101", "charades"):
        raise DatasetNotReady(f"the synthetic set has 'ucf101' and 'charades' parts, not {fmt!r}")
    report = run_ingest(IngestConfig(fmt=fmt, src=os.path.join(src, fmt), dst=url, gop=8))
    print(f"ingested {url}: inputs {report.inputs} = accepted {report.accepted} + quarantined "
          f"{report.quarantined}", flush=True)


def add_flow(url: str) -> None:
    """Compute Farneback optical flow for every video of the manifest at ``url`` (adds ``flow_uri``)."""
    from pipelines.prep.flow import FlowConfig, run_flow

    print(f"computing optical flow (Farneback) for {url}", flush=True)
    run_flow(FlowConfig(manifest=url, method="farneback"))


def ensure_dataset(data, recipes: Sequence) -> None:
    """Make or check the dataset of ``data`` (a :class:`~pipelines.methods.spec.DataConfig`) for ``recipes``.

    Raises:
        DatasetNotReady: no manifest, an empty split, or a required column missing (module docstring).
    """
    url, fmt = data.manifest, getattr(data, "format", "ucf101")
    if not manifest.exists(url):
        if data.synthetic:
            make_synthetic(url, data.synthetic, fmt)
        else:
            raise DatasetNotReady(
                f"no manifest at {url}. Ingest a dataset there first, e.g.\n"
                f"  python jobs/ingest.py --format {fmt} --src <{fmt} folder or URL> --dst {url}\n"
                f"or make a synthetic one:\n"
                f"  python jobs/make_synthetic.py --preset tiny --out data/synthetic && "
                f"python jobs/ingest.py --format {fmt} --src data/synthetic/{fmt} --dst {url}\n"
                f"(or set --set data.manifest=<URL> to a dataset that exists)")
    table = manifest.read_manifest(url)
    splits = table.column("split").to_pylist()
    if data.split not in splits:
        raise DatasetNotReady(f"the manifest at {url} has no rows in split {data.split!r} (it has "
                              f"{sorted(set(splits)) or 'no rows'}); choose one with --set data.split=NAME")
    rows = [i for i, s in enumerate(splits) if s == data.split]
    for recipe in recipes:
        for req in recipe.required():
            values = table.column(req.column).to_pylist() if req.column in table.column_names else None
            if values is not None and any(values[i] for i in rows):
                continue
            if data.synthetic and req.make is not None:
                req.make(url)
            else:
                raise DatasetNotReady(f"recipe {recipe.name!r} reads {req.column!r} and no {data.split!r} row "
                                      f"of {url} has it: {req.fix.replace('<dataset>', url)}")


def ensure_phase_data(spec, job, phases: Sequence) -> None:
    """:func:`ensure_dataset` for every dataset the phases train on (a phase may have its own),
    each checked against the recipes of the phases that read it."""
    from pipelines.methods.spec import phase_data

    groups: dict[str, tuple] = {}
    for phase in phases:
        data = phase_data(job, phase)
        key = f"{data.manifest}|{data.split}"
        groups.setdefault(key, (data, []))[1].append(spec.recipe(job, phase))
    for data, recipes in groups.values():
        ensure_dataset(data, recipes)
