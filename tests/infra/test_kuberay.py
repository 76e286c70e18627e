"""KubeRay and Kubernetes manifests (infra/kuberay/): schemas, planted errors, vidray's rules."""

from __future__ import annotations

import copy
import hashlib
import re
import shlex
import subprocess
import sys

import pytest

from tests.infra.common import INFRA, ROOT

KUBERAY = INFRA / "kuberay"
MANIFESTS = sorted(p.name for p in KUBERAY.glob("*.yaml"))
RAYJOBS = ["rayjob-coclr.yaml", "rayjob-tune.yaml"]


def docs(validate, name: str) -> list[dict]:
    """The documents of infra/kuberay/<name>."""
    return validate.load_yaml_docs(KUBERAY / name)


def test_the_expected_manifests_exist():
    assert {"raycluster.yaml", "rayjob-coclr.yaml", "rayjob-tune.yaml", "mlflow.yaml",
            "secrets.example.yaml"} <= set(MANIFESTS)


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_is_valid(validate, name):
    assert validate.manifest_errors(KUBERAY / name) == []


def test_vendored_crds_are_the_recorded_release(validate):
    readme = (validate.SCHEMAS / "README.md").read_text()
    assert "v1.7.0" in readme
    for filename in validate.CRD_FILES.values():
        digest = hashlib.sha256((validate.SCHEMAS / filename).read_bytes()).hexdigest()
        assert f"`{filename}` | `{digest}`" in readme, f"{filename} changed without updating the README"


def test_make_strict_closes_objects_with_properties_only(validate):
    schema = {"type": "object", "properties": {
        "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
        "map": {"type": "object", "additionalProperties": {"type": "string"}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {}}},
        "list": {"type": "array", "items": {"type": "object", "properties": {"b": {}}}}}}
    strict = validate.make_strict(schema)
    assert strict["additionalProperties"] is False
    assert strict["properties"]["closed"]["additionalProperties"] is False
    assert strict["properties"]["map"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in strict["properties"]["free"]
    assert strict["properties"]["list"]["items"]["additionalProperties"] is False
    assert "additionalProperties" not in schema  # the input is left alone


# ---- planted errors: each validator must catch its kind of mistake
def test_crd_validator_catches_a_typo_in_a_rayjob(validate):
    job = docs(validate, "rayjob-coclr.yaml")[0]
    job["spec"]["shutdownAfterJobFinish"] = job["spec"].pop("shutdownAfterJobFinishes")
    errors = validate.crd_errors(job)
    assert any("shutdownAfterJobFinish" in e and "not allowed" in e for e in errors), errors


@pytest.mark.parametrize("plant, expected", [
    (lambda s: s["workerGroupSpecs"][0].__setitem__("maxReplica", 8), "maxReplica"),
    (lambda s: s["workerGroupSpecs"][0].__setitem__("replicas", "0"), "is not of type 'integer'"),
    (lambda s: s["authOptions"].__setitem__("mode", "tokens"), "is not one of"),
    (lambda s: s["headGroupSpec"]["template"]["spec"]["containers"][0].__setitem__("imagePullPolicyy", "Always"),
     "imagePullPolicyy"),
    (lambda s: s["headGroupSpec"]["rayStartParams"].__setitem__("num-cpus", 0), "is not of type 'string'"),
], ids=["unknown-field", "wrong-type", "bad-enum", "typo-in-pod-template", "number-not-string"])
def test_crd_validator_catches_errors_deep_in_the_cluster_spec(validate, plant, expected):
    job = docs(validate, "rayjob-tune.yaml")[0]
    plant(job["spec"]["rayClusterSpec"])
    errors = validate.crd_errors(job)
    assert any(expected in e for e in errors), errors


def test_crd_validator_checks_metadata_too(validate):
    cluster = docs(validate, "raycluster.yaml")[0]
    cluster["metadata"]["lables"] = {"a": "b"}
    assert any("lables" in e for e in validate.crd_errors(cluster))


def test_builtin_validator_catches_a_wrong_type_in_a_deployment(validate):
    deployment = next(d for d in docs(validate, "mlflow.yaml") if d["kind"] == "Deployment")
    bad = copy.deepcopy(deployment)
    bad["spec"]["replicas"] = "one"
    errors = validate.builtin_errors(bad)
    assert errors and "spec/replicas" in errors[0] and "integer" in errors[0], errors
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "5000"
    assert any("containerPort" in e for e in validate.builtin_errors(bad))


def test_builtin_validator_is_strict_about_unknown_fields(validate):
    service = next(d for d in docs(validate, "mlflow.yaml") if d["kind"] == "Service")
    service["spec"]["selectr"] = service["spec"].pop("selector")
    assert any("selectr" in e for e in validate.builtin_errors(service))
    secret = docs(validate, "secrets.example.yaml")[0]
    secret["stringdata"] = secret.pop("stringData")
    assert any("stringdata" in e for e in validate.builtin_errors(secret))


def test_manifest_errors_reports_planted_errors_of_a_whole_file(validate):
    text = (KUBERAY / "mlflow.yaml").read_text().replace("  replicas: 1", "  replicas: one", 1)
    errors = validate.manifest_errors("mlflow.yaml", text)
    assert len(errors) == 1 and errors[0].startswith("Deployment/mlflow: spec/replicas"), errors


# ---- vidray's rules
def test_rayjobs_run_the_cluster_of_raycluster_yaml(validate):
    cluster = docs(validate, "raycluster.yaml")[0]["spec"]
    for name in RAYJOBS:
        assert docs(validate, name)[0]["spec"]["rayClusterSpec"] == cluster, f"{name} drifted from raycluster.yaml"


@pytest.mark.parametrize("name", ["raycluster.yaml", *RAYJOBS])
def test_ray_cluster_follows_the_rules(validate, name):
    doc = docs(validate, name)[0]
    assert validate.ray_policy_errors(doc) == []
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    gpu = next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")
    container = gpu["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"]
    shm = {v["name"]: v for v in gpu["template"]["spec"]["volumes"]}["dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"mountPath": "/dev/shm", "name": "dshm"} in container["volumeMounts"]
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"]  # explicit, with its reason beside it


def test_rayjobs_clean_up_and_run_the_documented_entrypoints(validate):
    coclr, tune = (docs(validate, n)[0]["spec"] for n in RAYJOBS)
    assert coclr["entrypoint"].startswith("python jobs/coclr.py --variant ucf101")
    assert tune["entrypoint"] == "python jobs/tune.py --method coclr --variant ucf101 --num-samples 16"
    for spec in (coclr, tune):
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
        assert isinstance(validate.load_yaml_docs("runtime env", spec["runtimeEnvYAML"])[0], dict)


def test_policy_catches_a_planted_violation(validate):
    job = docs(validate, "rayjob-coclr.yaml")[0]
    job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = "4"
    job["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "disabled"
    job["spec"]["shutdownAfterJobFinishes"] = False
    assert len(validate.ray_policy_errors(job)) == 3


@pytest.mark.parametrize("name", MANIFESTS)
def test_credentials_come_only_from_secrets(validate, name):
    for doc in docs(validate, name):
        assert validate.credential_errors(doc) == []


def test_credential_check_catches_a_literal_password_and_one_in_a_uri(validate):
    text = (KUBERAY / "mlflow.yaml").read_text()
    literal = text.replace("valueFrom: {secretKeyRef: {name: vidray-mlflow-db, key: password}}", "value: hunter2")
    errors = [e for d in validate.load_yaml_docs("x", literal) for e in validate.credential_errors(d)]
    assert errors == ["env PGPASSWORD: a credential must come from a secretKeyRef"]
    in_uri = text.replace("$(PGUSER)@", "$(PGUSER):hunter2@")
    assert any("credential-like" in e for d in validate.load_yaml_docs("x", in_uri)
               for e in validate.credential_errors(d))


def test_every_secret_reference_exists_in_the_example(validate):
    keys = {d["metadata"]["name"]: set(d["stringData"]) for d in docs(validate, "secrets.example.yaml")}
    for name in MANIFESTS:
        text = (KUBERAY / name).read_text()
        for secret, key in re.findall(r"secretKeyRef: \{name: ([\w-]+), key: ([\w-]+)\}", text):
            assert key in keys.get(secret, set()), f"{name}: {secret}/{key} is not in secrets.example.yaml"
        for secret in re.findall(r"secretName: ([\w-]+)", text):
            assert "auth_token" in keys[secret]  # the key KubeRay reads


def test_the_secrets_example_holds_placeholders_only(validate):
    text = (KUBERAY / "secrets.example.yaml").read_text()
    assert "EXAMPLE ONLY" in text.splitlines()[0]
    for doc in docs(validate, "secrets.example.yaml"):
        for key, value in doc["stringData"].items():
            if key in {"auth_token", "password", "access-key-id", "secret-access-key"}:
                assert value.startswith("REPLACE_ME"), f"{doc['metadata']['name']}/{key}"


def test_mlflow_reads_its_database_password_from_the_environment(validate):
    deployment = next(d for d in docs(validate, "mlflow.yaml") if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql://$(PGUSER)@")
    assert any(a.startswith("--artifacts-destination=s3://") for a in container["args"])
    assert not any("backend-store-uri" in a for a in container["args"])


def _job_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_coclr_entrypoint_overrides_are_accepted_by_the_job(validate):
    argv = shlex.split(docs(validate, "rayjob-coclr.yaml")[0]["spec"]["entrypoint"])
    assert argv[:2] == ["python", "jobs/coclr.py"]
    out = _job_cli([*argv[1:], "--print-config"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "s3://vidray-datasets/ucf101" in out.stdout


def test_tune_entrypoint_options_exist(validate):
    out = _job_cli(["jobs/tune.py", "--help"])
    assert out.returncode == 0, out.stderr[-2000:]
    for option in ("--method", "--variant", "--num-samples"):
        assert option in out.stdout
