"""Every registered method, end to end, from one parametrized test (a method added later is covered).

Its ``debug`` variant's first phase trains on the session's local Ray cluster against a real
MLflow server, on the tiny synthetic set the variant makes itself when the manifest is
missing (the fresh-clone path), once per session (``tests/debug_runs.py``: the detection
schedule's test goes on from the same run); the checkpoint loads into the method it came from; a second
submission of the same run resumes by skipping the registered phase; the registered encoder
loads back without unpickling and runs on its input example; the training run has the data
plane's per-stage telemetry (decode / augment / Arrow ms, bytes read, data wait) for every
epoch and its stacked-bar plot.
"""

from __future__ import annotations

import pytest
import torch

from pipelines.methods import METHODS, get_method
from pipelines.train import entry

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", sorted(METHODS))
def test_debug_variant_trains_checkpoints_resumes_registers_and_loads(method, debug_runs, mlflow_server, monkeypatch,
                                                                      capsys):
    from mlflow import MlflowClient

    from pipelines.eval.results import default_protocols, load_encoder
    from pipelines.tracking import load_registered_model
    from pipelines.train.checkpoint import load_state

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    spec = get_method(method)
    run = debug_runs.first_phase(method, capsys)  # trained here, or by an earlier test that needed it too
    job, phase, argv = run.job, run.phase, run.argv
    assert f"[{phase.name}] epoch 1/" in run.out and "clips/s" in run.out  # one readable progress line per epoch
    assert "decode/aug/arrow ms" in run.out  # the data plane's stages, live
    for noise in ("State API may be temporarily unavailable", "Downloading artifacts"):  # pipelines/__init__, cluster
        assert noise not in run.out + run.err, f"a line a second or a progress bar in the job's log: {noise!r}"
    ckpts = [p for p in sorted(run.run_dir.glob("checkpoint_*")) if p.is_dir()]
    assert ckpts, "no checkpoint written"
    state = load_state(str(ckpts[-1]))  # weights_only
    model = spec.build(job, phase, {})
    model.load_state_dict(state["model"])  # strict: the checkpoint is this method's
    assert state["epoch"] == phase.epochs and state["step"] >= 1

    assert entry.main(argv, method=method) == 0  # the same run again: the finished phase is skipped
    assert f"phase {phase.name}: already registered" in capsys.readouterr().out
    for key in phase.registers:
        module, info = load_registered_model(f"models:/{job.model_name}-{key}@{phase.name}")
        example = spec.export(job, phase, model)[key].example
        with torch.no_grad():
            assert torch.isfinite(module(example)).all()
        assert info["backbone"] == spec.export(job, phase, model)[key].backbone_name
        run_id = load_encoder(f"models:/{job.model_name}-{key}@{phase.name}")[3]
        assert default_protocols(run_id) == list(spec.eval_protocols)  # jobs/evaluate.py's default
    assert_stage_telemetry(MlflowClient(mlflow_server), run_id, phase.epochs)


def assert_stage_telemetry(client, run_id: str, epochs: int) -> None:
    """The training run has the data plane's per-stage metrics for every epoch and their plot."""
    history = {k: client.get_metric_history(run_id, f"epoch/epoch_data_{k}")
               for k in ("decode_ms", "augment_ms", "arrow_ms", "read_kb", "wait_frac")}
    assert {k: len({m.step for m in h}) for k, h in history.items()} == dict.fromkeys(history, epochs)
    assert all(m.value > 0 for k in ("decode_ms", "augment_ms", "read_kb") for m in history[k])
    assert all(0 <= m.value <= 1 for m in history["wait_frac"])
    assert "plots/data_stages.png" in [a.path for a in client.list_artifacts(run_id, "plots")]
