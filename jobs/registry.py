"""Model registry lookup: ``python jobs/registry.py {list, get NAME[@alias|/version] --out DIR, promote}``.

Talks to ``MLFLOW_TRACKING_URI`` (a SQL-backed store or a tracking server); S3 artifacts
are read with the standard AWS variables. ``get`` downloads the model, checks its files
and sha256 checksums and loads the weights with ``torch.load(weights_only=True)`` into a
freshly built backbone (nothing is unpickled). Exit status: 0, or 2 when the model,
version or alias does not exist or the download does not verify.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines import tracking  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered models, versions, aliases, runs, dataset fingerprints")
    get = sub.add_parser("get", help="download, verify and load NAME@alias or NAME/version")
    get.add_argument("model", metavar="NAME[@alias|/version]")
    get.add_argument("--out", required=True, help="folder to download the model into")
    promote = sub.add_parser("promote", help="point ALIAS of NAME at VERSION")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("alias")
    return p.parse_args(argv)


def model_uri(spec: str) -> str:
    """``NAME@alias`` -> ``models:/NAME@alias``; ``NAME/3`` -> ``models:/NAME/3``; ``NAME`` -> latest."""
    if spec.startswith("models:/"):
        return spec
    if "@" in spec or "/" in spec:
        return f"models:/{spec}"
    return f"models:/{spec}/latest"


def list_models(client) -> None:
    for rm in client.search_registered_models():
        aliases = {}
        for alias, version in (rm.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        print(rm.name)
        for mv in sorted(client.search_model_versions(f"name='{rm.name}'"), key=lambda v: int(v.version)):
            tags = mv.tags or {}
            fp = tags.get("dataset_fingerprint") or "-"
            print(f"  v{mv.version:<4} {mv.status:<8} aliases={','.join(aliases.get(str(mv.version), [])) or '-'}"
                  f"  run={mv.run_id or '-'}  dataset={fp[:16]}  commit={tags.get('git_commit', '-')[:10]}")


def get_model(spec: str, out: str) -> None:
    module, info = tracking.load_registered_model(model_uri(spec), out)
    n_params = sum(p.numel() for p in module.parameters())
    print(f"loaded {spec}: {info['backbone']}({', '.join(f'{k}={v}' for k, v in info['kwargs'].items())})")
    print(f"  parameters {n_params:,}  feature_dim {getattr(module, 'feature_dim', info.get('feature_dim'))}")
    print(f"  files verified (sha256) in {info['path']}")


def main(argv=None) -> int:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    args = parse_args(argv)
    client = MlflowClient(tracking.tracking_uri(), registry_uri=tracking.tracking_uri())
    try:
        if args.command == "list":
            list_models(client)
        elif args.command == "get":
            get_model(args.model, args.out)
        else:
            client.set_registered_model_alias(args.name, args.alias, args.version)
            print(f"{args.name}@{args.alias} -> version {args.version}")
    except (MlflowException, tracking.ModelVerificationError) as exc:
        print(f"registry: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
