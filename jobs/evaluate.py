"""Evaluate an encoder: ``python jobs/evaluate.py --model models:/coclr-rgb@coclr_rgb_c1 --protocol retrieval,linear``.

Protocols (seed 001): ``retrieval`` (R@1/5/10/20, test queries the train set),
``linear`` and ``mlp`` (probes on frozen multi-view features), ``finetune`` (encoder + head trained,
multi-view test). ``--model random:<backbone>`` scores a randomly initialised encoder
(the baseline; ``--set modality=flow`` for a random flow encoder). A flow encoder
(2 input channels, e.g. ``models:/coclr-flow@coclr_flow_c1``) is scored on views of the
manifest's flow videos. Results are printed as a table and logged to MLflow on the evaluated
model's run (metrics ``eval/<protocol>/<metric>``, confusion matrices as artifacts).
Without ``--protocol``, a registered model gets the protocols its training method's spec
names (``MethodSpec.eval_protocols``, found by the run's ``vidray_method`` tag).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.cluster import init_ray  # noqa: E402
from pipelines.config import apply_overrides  # noqa: E402
from pipelines.eval.protocols import EvalConfig, build_from_state, match_modality, run_protocols  # noqa: E402
from pipelines.eval.results import default_protocols, load_encoder, log_results  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="models:/NAME@alias, models:/NAME/version or random:BACKBONE")
    p.add_argument("--protocol", help="comma list of retrieval, linear, mlp, finetune (default: the protocols the "
                                      "training method's spec names; retrieval,linear for random:)")
    p.add_argument("--manifest", help="dataset folder or manifest URL")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="EvalConfig override k=v")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    args = p.parse_args(argv)
    cfg = apply_overrides(EvalConfig(), args.overrides + ([f"manifest={args.manifest}"] if args.manifest else []))
    init_ray()
    backbone, kwargs, state, run_id = load_encoder(args.model)
    protocols = ([x.strip() for x in args.protocol.split(",") if x.strip()] if args.protocol
                 else default_protocols(run_id))
    cfg, kwargs = match_modality(cfg, kwargs)  # a flow encoder is scored on flow views
    results = run_protocols(functools.partial(build_from_state, backbone, kwargs, state, cfg.seed), protocols,
                            cfg, backbone=backbone, state=state)
    if run_id:
        log_results(run_id, results)
    scores = {p: {k: round(v, 2) for k, v in r.items() if isinstance(v, float)}
              for p, r in results.items() if not p.startswith("_")}
    if args.json:
        print(json.dumps({"model": args.model, **scores}))
    else:
        print(f"\n{args.model}")
        for protocol, row in scores.items():
            print(f"  {protocol:<10} " + "  ".join(f"{k} {v:6.2f}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
