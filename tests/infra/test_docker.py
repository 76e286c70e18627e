"""The images (infra/docker/): hadolint, the pins, the build context."""

from __future__ import annotations

import re

import pytest

from tests.infra.common import INFRA, ROOT

DOCKER = INFRA / "docker"
DOCKERFILES = ["Dockerfile.cpu", "Dockerfile.cuda", "Dockerfile.mlflow"]


def arg(dockerfile: str, name: str) -> str:
    """The default of ``ARG name=...`` in a Dockerfile."""
    return re.search(rf"^ARG {name}=(\S+)$", (DOCKER / dockerfile).read_text(), re.M).group(1)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_lints_clean(validate, name):
    assert validate.hadolint_findings(DOCKER / name) == []


@pytest.mark.parametrize("line, codes", [
    ("RUN cd /tmp && make", {"DL3003"}),                                        # cd instead of WORKDIR
    ("RUN apt-get update && apt-get install -y --no-install-recommends curl \\\n"
     "    && rm -rf /var/lib/apt/lists/*", {"DL3008"}),                         # unpinned apt package
    ("RUN pip install --no-cache-dir requests", {"DL3013"}),                   # unpinned pip package
    ("USER ray", {"DL3066"}),                                                  # non-numeric user
], ids=["cd", "unpinned-apt", "unpinned-pip", "named-user"])
def test_hadolint_catches_planted_lines(validate, line, codes):
    text = (DOCKER / "Dockerfile.cpu").read_text().replace("USER 1000:1000", f"{line}\nUSER 1000:1000")
    found = {f["code"] for f in validate.hadolint_findings("Dockerfile.cpu", text)}
    assert codes <= found, found


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_images_pin_torch_first_and_install_the_project(name):
    text = (DOCKER / name).read_text()
    makefile = (ROOT / "Makefile").read_text()
    torch = re.search(r"^TORCH_VERSION := (\S+)$", makefile, re.M).group(1)
    assert arg(name, "TORCH_VERSION") == torch
    assert f'"torch=={torch}"' in (ROOT / "pyproject.toml").read_text()
    torch_at, project_at = text.index('"torch==${TORCH_VERSION}"'), text.index('==${RAY_VERSION}" .')
    assert torch_at < project_at  # torch first, then `pip install .`
    assert re.search(r"^USER 1000:1000$", text, re.M)
    index = "https://download.pytorch.org/whl/cpu" if name.endswith("cpu") else \
        "https://download.pytorch.org/whl/${CUDA_VARIANT}"
    assert index in text


def test_cuda_image_uses_the_cuda_build_torch_2_13_is_published_for():
    assert arg("Dockerfile.cuda", "CUDA_VARIANT") == "cu130"


def test_ray_version_matches_the_kuberay_manifests(validate):
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        version = arg(name, "RAY_VERSION")
        for manifest in ("raycluster.yaml", "rayjob-coclr.yaml", "rayjob-tune.yaml"):
            doc = validate.load_yaml_docs(INFRA / "kuberay" / manifest)[0]
            spec = doc["spec"].get("rayClusterSpec", doc["spec"])
            assert spec["rayVersion"] == version, f"{manifest} vs {name}"


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_build_context_is_filtered(name):
    ignore = (DOCKER / f"{name}.dockerignore").read_text().split()
    for local_state in (".venv", "data", "mlruns", "mlflow.db"):
        assert local_state in ignore
    copied = re.findall(r"^COPY (?:--\S+ )?(.+?) \S+$", (DOCKER / name).read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is copied but ignored"
    assert not (ROOT / ".dockerignore").exists() or "mlflow.db" in (ROOT / ".dockerignore").read_text()
