"""Contact sheet of a recipe's samples: ``python jobs/preview.py --manifest URL --recipe R --out preview.png``.

Builds the recipe's dataset over the split's first ``--samples`` manifest rows (exactly
as training would, same seed and epoch) and draws them with
``pipelines.data.preview.render_contact_sheet``: rows = samples (or their streams, blocks,
views), columns = frames, with labels and augmentation parameters as captions. Videos
that fail to decode are left out and counted on stderr. Exit status: 0 with a PNG
written; 2 when the manifest, split or recipe cannot be used; 3 when no sample decoded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.io import storage  # noqa: E402
from pipelines.cluster import init_ray  # noqa: E402
from pipelines.data.dataset import build_pipeline  # noqa: E402
from pipelines.data.preview import render_contact_sheet  # noqa: E402
from pipelines.data.recipes import RECIPES, recipe  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True, help="dataset folder or manifest .parquet URL")
    p.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    p.add_argument("--out", required=True, help="PNG path or URL")
    p.add_argument("--split", default="train")
    p.add_argument("--samples", type=int, default=4, help="samples drawn (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--num-classes", type=int, help="K for detection/eval (default: from the manifest)")
    p.add_argument("--debug", action="store_true", help="the recipe at CPU test size (8 frames, 64 px)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="recipe override, e.g. clip_len=16 or augment.out_size=112")
    p.add_argument("--max-cols", type=int, default=8, help="frames per row (evenly subsampled)")
    p.add_argument("--num-cpus", type=int, help="CPUs of an embedded local Ray cluster")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    init_ray(num_cpus=args.num_cpus)
    try:
        cfg = recipe(args.recipe, debug_size=args.debug, overrides=args.set)
        pipe = build_pipeline(args.manifest, cfg, args.split, seed=args.seed, epoch=args.epoch,
                              num_classes=args.num_classes, limit=args.samples)
    except (FileNotFoundError, ValueError) as exc:
        print(f"preview: {exc}", file=sys.stderr)
        return 2
    batch = next(iter(pipe.dataset.iter_batches(batch_size=args.samples, batch_format="numpy")), {})
    n = len(batch.get("video_id", []))
    accounting = pipe.accounting(n)
    print(f"preview: {json.dumps(accounting)}", file=sys.stderr)
    if not n:
        print(f"preview: no sample decoded; quarantined {accounting['kinds']}", file=sys.stderr)
        return 3
    image = render_contact_sheet(batch, cfg, max_samples=args.samples, max_cols=args.max_cols)
    with storage.open_url(args.out, "wb") as f:
        image.save(f, format="PNG")
    print(json.dumps({"out": args.out, "size": image.size, "samples": n, "recipe": cfg.name}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
