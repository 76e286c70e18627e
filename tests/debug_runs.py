"""The first phase of a method's ``debug`` variant, trained once per test session.

The end-to-end test over every method (``tests/pipelines/methods/test_every_method.py``) checks
what the first phase of each method's debug variant leaves behind; the detection schedule's test
(``tests/jobs/test_detection_job.py``) goes on from detection's first phase to its finetuning.
:class:`DebugRuns` trains a first phase the first time a test asks for it, on the session's Ray
cluster and MLflow server, and hands every later asker the same run. A Ray Train run costs
~20 s of CPU in process starts alone, so a phase two tests need is trained once.

The debug sets live in one session folder (``debug_data``) and are made by whichever run needs
them first, from nothing, as on a fresh clone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class FirstPhase:
    """One trained first phase: the resolved job, its phase, the ``--set`` overrides and CLI
    arguments that made it (rerun them to resume the same run), and what training printed
    (the driver's and, forwarded by Ray, its workers' and actors')."""

    job: Any
    phase: Any
    overrides: tuple[str, ...]
    out: str
    err: str

    @property
    def set_args(self) -> list[str]:
        """``--set`` and each override: the run's options for any of its phases."""
        return [a for o in self.overrides for a in ("--set", o)]

    @property
    def argv(self) -> list[str]:
        """The CLI arguments of ``entry.main`` that train (or, again, skip) this phase."""
        return ["--variant", "debug", "--stage", self.phase.name, *self.set_args]

    @property
    def run_dir(self) -> Path:
        """The phase's Ray Train run folder (its checkpoints)."""
        return Path(self.job.storage_path) / f"{self.job.run_name}.{self.phase.name}"


class DebugRuns:
    """First phases of debug variants, each trained once (see the module docstring)."""

    def __init__(self, data: Path, runs: Path, tracking_uri: str) -> None:
        self.data, self.runs, self.tracking_uri = data, runs, tracking_uri
        self._done: dict[str, FirstPhase] = {}

    def overrides(self, method: str) -> tuple[str, ...]:
        """The ``--set`` overrides of ``method``'s session run (the same for every phase of it)."""
        return (f"data.manifest={self.data / 'ucf101'}", f"storage_path={self.runs}",
                f"run_name={method}-e2e", "scaling.num_workers=1")

    def first_phase(self, method: str, capsys) -> FirstPhase:
        """``method``'s first phase, trained now (its output read from ``capsys``) unless done before."""
        if method not in self._done:
            self._done[method] = self._train(method, capsys)
        return self._done[method]

    def _train(self, method: str, capsys) -> FirstPhase:
        from pipelines.config import apply_overrides
        from pipelines.data.workers import patched_environ
        from pipelines.methods import get_method
        from pipelines.prep.ready import ensure_dataset
        from pipelines.train import entry

        spec, overrides = get_method(method), self.overrides(method)
        job = entry.resolve_paths(apply_overrides(spec.variants["debug"](), list(overrides)))
        with patched_environ({"MLFLOW_TRACKING_URI": self.tracking_uri}):
            ensure_dataset(job.data, [])  # the first run renders and ingests it, as a fresh clone would
            # the first phase only: the rest of a schedule is the same machinery
            run = FirstPhase(job, spec.phases(job)[0], overrides, out="", err="")
            capsys.readouterr()  # what the asking test printed before is its own
            assert entry.main(run.argv, method=method) == 0
        printed = capsys.readouterr()
        return dataclasses.replace(run, out=printed.out, err=printed.err)
