"""The demo behind ``make demo``: the whole CoCLR story on the synthetic motion dataset.

synthetic dataset -> ingest -> optical flow -> a local Ray cluster (``ray start --head``,
token auth, dashboard on 127.0.0.1) -> ``ray job submit --working-dir . -- python
jobs/coclr.py --variant demo`` (InfoNCE RGB and flow, one CoCLR cycle, encoders
registered in MLflow) -> retrieval and linear-probe evaluation of random init, InfoNCE
and CoCLR -> a table of R@1 / R@5 / linear top-1 and the registered versions.
Everything runs on embedded defaults: the local filesystem under ``--data`` as object
store, MLflow in ``mlflow.db`` / ``mlruns/`` of the project.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.cluster import init_ray, ray_job_submit  # noqa: E402
from pipelines.evaluate import EvalConfig, build_from_state, load_encoder, log_results, run_protocols  # noqa: E402
from pipelines.flow import FlowConfig, run_flow  # noqa: E402
from pipelines.ingest import IngestConfig, run_ingest  # noqa: E402
from pipelines.synthetic import generate, preset  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def start_cluster(env: dict) -> str:
    """``ray start --head`` with token auth (a token is generated once) and a loopback dashboard."""
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=False, capture_output=True)
    subprocess.run([RAY, "stop", "--force"], env=env, check=False, capture_output=True)
    subprocess.run([RAY, "start", "--head", "--num-cpus", str(os.cpu_count() or 2), "--dashboard-host",
                    "127.0.0.1", "--disable-usage-stats"], env=env, check=True)
    return "127.0.0.1:6379"


def submit(env: dict, data: Path, variant: str) -> None:
    runtime_env = {"env_vars": {"VIDRAY_HOME": str(ROOT), "VIDRAY_GIT_COMMIT": _git_commit()}}
    entrypoint = ["python", "jobs/coclr.py", "--variant", variant, "--set", f"data.manifest={data / 'demo' / 'ucf101'}",
                  "--set", f"storage_path={data / 'runs'}"]
    print(f"$ ray job submit --working-dir . -- python jobs/coclr.py --variant {variant} ...", flush=True)
    out = ray_job_submit("http://127.0.0.1:8265", str(ROOT), entrypoint, runtime_env=runtime_env, env=env)
    if out.returncode != 0:
        raise SystemExit(f"the CoCLR job failed (exit {out.returncode})")


def _git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def evaluate(data: Path, model: str, debug_size: bool) -> dict:
    """Retrieval + linear probe of one encoder (``random:`` or a registry URI)."""
    backbone, kwargs, state, run_id = load_encoder(model)
    cfg = EvalConfig(manifest=str(data / "demo" / "ucf101"), debug_size=debug_size, num_clips=2,
                     spatial_crops=1, linear_epochs=300)
    results = run_protocols(functools.partial(build_from_state, backbone, kwargs, state, 0),
                            ["retrieval", "linear"], cfg)
    if run_id:
        log_results(run_id, results)
    return {"R@1": results["retrieval"]["R@1"], "R@5": results["retrieval"]["R@5"],
            "linear_top1": results["linear"]["top1"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data", help="local folder to work in")
    p.add_argument("--preset", default="demo", help="synthetic dataset preset (tiny or demo)")
    p.add_argument("--variant", default="demo", help="jobs/coclr.py variant (demo or debug)")
    p.add_argument("--keep-cluster", action="store_true", help="leave the Ray cluster running")
    args = p.parse_args(argv)
    start, data = time.time(), Path(args.data).resolve()
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    step(f"1/6 synthetic motion dataset ({args.preset}) -> {data / 'synthetic'}")
    made = generate(str(data / "synthetic"), preset(args.preset), progress=sys.stderr.isatty())
    print({k: made[k] for k in ("classes", "ucf_train", "ucf_test", "charades_videos", "written", "kept")})
    step("2/6 local Ray cluster: ray start --head (token auth, dashboard on 127.0.0.1)")
    os.environ["RAY_ADDRESS"] = start_cluster(env)
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
        submit(env, data, args.variant)
        step("6/6 evaluation: retrieval (test queries train) and linear probe, multi-view features")
        from pipelines.coclr import VARIANTS

        job = VARIANTS[args.variant]()
        rows = {"random init": f"random:{job.method.backbone}",
                "InfoNCE (rgb)": f"models:/{job.model_name}-rgb@infonce_rgb",
                "CoCLR (rgb)": f"models:/{job.model_name}-rgb@coclr_rgb_c1"}
        scores = {label: evaluate(data, uri, job.data.debug_size) for label, uri in rows.items()}
        print(f"\n{'encoder':<16} {'R@1':>7} {'R@5':>7} {'linear top-1':>13}   model")
        for label, s in scores.items():
            print(f"{label:<16} {s['R@1']:7.2f} {s['R@5']:7.2f} {s['linear_top1']:13.2f}   {rows[label]}")
        subprocess.run([sys.executable, str(ROOT / "jobs" / "registry.py"), "list"], check=False)
        print(f"\ndemo finished in {time.time() - start:.0f}s", flush=True)
    finally:
        import ray

        ray.shutdown()  # disconnect before the cluster goes away
        if not args.keep_cluster:
            subprocess.run([RAY, "stop"], env=env, check=False, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
