"""The demo behind ``make demo``: the whole CoCLR story on the synthetic motion dataset.

synthetic dataset -> ingest -> optical flow -> a local Ray cluster (``ray start --head``,
token auth, dashboard on 127.0.0.1) -> ``ray job submit --working-dir . -- python
jobs/coclr.py --variant demo`` (InfoNCE RGB and flow, one CoCLR cycle, encoders
registered in MLflow) -> retrieval and linear-probe evaluation of random init, InfoNCE
and CoCLR -> a table of R@1 / R@5 / linear top-1 and the registered versions.
Everything runs on embedded defaults: the local filesystem under ``--data`` as object
store, MLflow in ``mlflow.db`` / ``mlruns/`` of ``VIDRAY_HOME`` (``~/.vidray``). A phase already
registered there for the same data and config is not trained again: a second ``make demo``
evaluates what the first one trained.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.cluster import LocalHead, init_ray, ray_job_submit  # noqa: E402
from pipelines.eval.protocols import EvalConfig  # noqa: E402
from pipelines.eval.results import compare_encoders, format_comparison  # noqa: E402
from pipelines.methods import get_method  # noqa: E402
from pipelines.prep.flow import FlowConfig, run_flow  # noqa: E402
from pipelines.prep.ingest import IngestConfig, run_ingest  # noqa: E402
from pipelines.prep.synthetic import generate, preset  # noqa: E402
from pipelines.tracking import git_commit, home  # noqa: E402

REFERENCE = ROOT / "jobs" / "demo_reference.json"  # bench/coclr_scale.py --write-reference
MINED_NOTE = ("'mined same-class': % of the positives CoCLR mined in the other modality that have the query's "
              "class (last epoch; labels are never used to mine).")


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def submit(head: LocalHead, data: Path, variant: str) -> None:
    # RAY_ADDRESS for the job's own actors: Ray Train's placement-group cleaner resolves "auto" and
    # fails when another Ray cluster runs on this machine ("Found multiple active Ray instances").
    runtime_env = {"env_vars": {"VIDRAY_HOME": str(home()), "VIDRAY_GIT_COMMIT": git_commit(),
                                "RAY_ADDRESS": head.address}}
    entrypoint = ["python", "jobs/coclr.py", "--variant", variant, "--set", f"data.manifest={data / 'demo' / 'ucf101'}",
                  "--set", f"storage_path={data / 'runs'}"]
    print(f"$ ray job submit --working-dir . -- python jobs/coclr.py --variant {variant} ...", flush=True)
    out = ray_job_submit(head.dashboard_url, str(ROOT), entrypoint, runtime_env=runtime_env, env=head.env)
    if out.returncode != 0:
        raise SystemExit(f"the CoCLR job failed (exit {out.returncode})")


def reference(variant: str, manifest_url: str) -> tuple[dict | None, str]:
    """The rows measured over several seeds by bench/coclr_scale.py for this variant, and a note
    that says how they were measured and whether this run's dataset is the same one."""
    import json

    from pipelines.io import manifest

    ref = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {}
    if ref.get("variant") != variant:
        return None, ""
    ours = manifest.fingerprint(manifest.read_manifest(manifest_url))
    same = "the same dataset" if ours == ref["dataset_fingerprint"] else (
        f"another rendering of the dataset (fingerprint {ref['dataset_fingerprint'][:16]}, this run "
        f"{ours[:16]}: other library builds; compare with the spread, not the digits)")
    return ref["rows"], (f"'ref': mean ± std over seeds {ref['seeds']} of `{ref['command']}` ({ref['date']}; "
                         f"the same recipe and steps, data from memory), on {same}. One seed's figure "
                         f"within about 2 std of its ref is as expected.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data", help="local folder to work in")
    p.add_argument("--preset", default="demo", help="synthetic dataset preset (tiny or demo)")
    p.add_argument("--variant", default="demo", help="jobs/coclr.py variant (demo or debug)")
    p.add_argument("--keep-cluster", action="store_true", help="leave the demo's Ray cluster running")
    p.add_argument("--ray-port", type=int, default=int(os.environ.get("VIDRAY_RAY_PORT", 0)) or None,
                   help="GCS port of the demo's own Ray head (default: a free one)")
    p.add_argument("--dashboard-port", type=int, default=int(os.environ.get("VIDRAY_DASHBOARD_PORT", 0)) or None,
                   help="dashboard port of the demo's own Ray head (default: a free one)")
    args = p.parse_args(argv)
    start, data = time.time(), Path(args.data).resolve()
    step(f"1/6 synthetic motion dataset ({args.preset}) -> {data / 'synthetic'}")
    made = generate(str(data / "synthetic"), preset(args.preset), progress=sys.stderr.isatty())
    print({k: made[k] for k in ("classes", "ucf_train", "ucf_test", "charades_videos", "written", "kept")})
    step("2/6 the demo's own Ray cluster: ray start --head (own temp dir and ports, token auth, "
         "dashboard on 127.0.0.1; other Ray clusters on this machine are left alone)")
    head = LocalHead(gcs_port=args.ray_port, dashboard_port=args.dashboard_port).start()
    os.environ["RAY_ADDRESS"] = head.address
    try:
        init_ray()
        step("3/6 ingest (UCF101- and Charades-style annotations), transcoding to GOP 8")
        for name in ("ucf101", "charades"):
            r = run_ingest(IngestConfig(fmt=name, src=str(data / "synthetic" / name),
                                        dst=str(data / "demo" / name), gop=8))
            print(f"{name}: inputs {r.inputs} = accepted {r.accepted} + quarantined {r.quarantined}")
        step("4/6 optical flow (Farneback; TV-L1 with jobs/flow.py --method tvl1)")
        f = run_flow(FlowConfig(manifest=str(data / "demo" / "ucf101"), method="farneback"))
        print(f"rows {f.rows}: computed {f.computed}, already there {f.existing}, quarantined {f.quarantined}")
        step(f"5/6 CoCLR schedule as a Ray job (variant {args.variant})")
        submit(head, data, args.variant)
        step("6/6 evaluation: retrieval (test queries train) and linear probe, multi-view features")
        spec = get_method("coclr")
        job = spec.variants[args.variant]()
        models = {(m, label): uri for m in ("rgb", "flow") for label, uri in (
            ("random init", f"random:{job.method.backbone}"),
            ("InfoNCE", f"models:/{job.model_name}-{m}@infonce_{m}"),
            ("CoCLR", f"models:/{job.model_name}-{m}@coclr_{m}_c1"))}
        stride = spec.recipe(job, spec.phases(job)[0]).stride  # evaluation windows span what training saw
        cfg = EvalConfig(manifest=str(data / "demo" / "ucf101"), debug_size=job.data.debug_size, num_clips=2,
                         spatial_crops=1, stride=stride, linear_epochs=300)
        rows = compare_encoders(models, cfg, extra=spec.table_metrics)
        ref, ref_note = reference(args.variant, cfg.manifest)
        print("\n" + format_comparison(rows, num_classes=made["classes"], notes=[MINED_NOTE, ref_note],
                                       reference=ref))
        subprocess.run([sys.executable, str(ROOT / "jobs" / "registry.py"), "list"], check=False)
        print(f"\ndemo finished in {time.time() - start:.0f}s", flush=True)
    finally:
        import ray

        ray.shutdown()  # disconnect before the cluster goes away
        if args.keep_cluster:
            print(f"the demo's Ray head keeps running at {head.address} (dashboard {head.dashboard_url}); "
                  f"stop it with: kill -- -{head.pid}", flush=True)
        else:
            head.stop()  # only the processes this demo started
    return 0


if __name__ == "__main__":
    sys.exit(main())
