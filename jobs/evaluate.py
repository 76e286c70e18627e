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

Two-stream late fusion (seed 001: RGB + flow, outputs averaged): ``--fuse models:/coclr-flow@...``
scores each stream alone, then the mean of their similarities (retrieval) and of their probes'
softmax probabilities (linear, mlp) on the videos both streams have (:mod:`pipelines.eval.fusion`);
the fused scores are logged on both models' runs as ``eval/fused_<protocol>/<metric>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.cluster import init_ray  # noqa: E402
from pipelines.config import apply_overrides  # noqa: E402
from pipelines.eval.protocols import EvalConfig, build_from_state, match_modality, run_protocols  # noqa: E402
from pipelines.eval.fusion import FUSABLE, Stream, class_count, fusion_table, run_fused, scores_only  # noqa: E402
from pipelines.eval.results import default_protocols, load_encoder, log_results  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="models:/NAME@alias, models:/NAME/version or random:BACKBONE")
    p.add_argument("--protocol", help="comma list of retrieval, linear, mlp, finetune (default: the protocols the "
                                      "training method's spec names; retrieval,linear for random:)")
    p.add_argument("--manifest", help="dataset folder or manifest URL")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="EvalConfig override k=v")
    p.add_argument("--fuse", metavar="MODEL", help="a second stream (e.g. the flow encoder) fused late with --model")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    args = p.parse_args(argv)
    cfg = apply_overrides(EvalConfig(), args.overrides + ([f"manifest={args.manifest}"] if args.manifest else []))
    init_ray()
    models = [args.model] + ([args.fuse] if args.fuse else [])
    encoders = [load_encoder(m) for m in models]
    protocols = ([x.strip() for x in args.protocol.split(",") if x.strip()] if args.protocol
                 else default_protocols(encoders[0][3]))
    streams, single = [], {}
    for i, (model, (backbone, kwargs, state, run_id)) in enumerate(zip(models, encoders)):
        stream_cfg = cfg if i == 0 else dataclasses.replace(cfg, modality=other_modality(streams[0].cfg.modality))
        model_cfg, kwargs = match_modality(stream_cfg, kwargs)  # a flow encoder is scored on flow views
        build = functools.partial(build_from_state, backbone, kwargs, state, cfg.seed)
        results = run_protocols(build, protocols, model_cfg, backbone=backbone, state=state)
        if run_id:
            log_results(run_id, results)
        single[f"{model_cfg.modality} {model.rsplit('/', 1)[-1]}"[:16]] = scores_only(results)
        streams.append(Stream(build, model_cfg))
    fused = {}
    if args.fuse:
        num_classes, names = class_count(cfg.manifest)
        fused = run_fused(streams, [p for p in protocols if p in FUSABLE], num_classes)
        for _, _, _, run_id in encoders:
            if run_id:
                log_results(run_id, {**fused, "_class_names": names})
    report(args, single, fused)
    return 0


def other_modality(modality: str) -> str:
    """The second stream's views when its encoder does not say (``random:``): the other modality."""
    return "flow" if modality == "rgb" else "rgb"


def report(args, single: dict, fused: dict) -> None:
    """One stream: ``{"model", protocol: scores}`` (JSON) or lines; two: the fusion table, or
    ``{"model", "fuse", "streams": {name: scores}, "fused_<protocol>": scores}``."""
    def rounded(scores: dict) -> dict:
        return {p: {k: round(v, 2) for k, v in r.items()} for p, r in scores.items()}

    if args.fuse:
        print(json.dumps({"model": args.model, "fuse": args.fuse, "streams": {m: rounded(s) for m, s in single.items()},
                          **rounded(scores_only(fused))}) if args.json else "\n" + fusion_table(single, fused))
        return
    (scores,) = single.values()
    if args.json:
        print(json.dumps({"model": args.model, **rounded(scores)}))
        return
    print(f"\n{args.model}")
    for protocol, row in rounded(scores).items():
        print(f"  {protocol:<10} " + "  ".join(f"{k} {v:6.2f}" for k, v in row.items()))


if __name__ == "__main__":
    sys.exit(main())
