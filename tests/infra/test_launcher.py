"""The Ray cluster-launcher config (infra/launcher/aws.yaml), checked as `ray up` would, offline."""

from __future__ import annotations

import copy
import socket

import pytest

from tests.infra.common import INFRA

AWS = INFRA / "launcher" / "aws.yaml"


@pytest.fixture
def config(validate) -> dict:
    """A fresh copy of aws.yaml."""
    return validate.load_yaml_docs(AWS)[0]


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt (boto3 to AWS, a metadata server, DNS) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during validation: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_aws_config_passes_rays_own_validation_without_network(validate, config, no_network):
    assert validate.launcher_errors(config) == []


def test_prepare_config_fills_the_defaults_ray_up_needs(config, no_network):
    from ray.autoscaler._private.util import prepare_config

    prepared = prepare_config(copy.deepcopy(config))
    assert prepared["provider"]["type"] == "aws" and "cluster_synced_files" in prepared
    assert prepared["available_node_types"]["head"]["max_workers"] == 0
    assert set(prepared["available_node_types"]) == {"head", "gpu_spot"}  # ours replace the defaults


@pytest.mark.parametrize("plant, expected", [
    (lambda c: c.__setitem__("head_start_ray_command", c.pop("head_start_ray_commands")),
     "'head_start_ray_command' was unexpected"),
    (lambda c: c["docker"].__setitem__("imagee", "vidray:cpu"), "'imagee' was unexpected"),
    (lambda c: c["available_node_types"]["gpu_spot"].__setitem__("min_worker", 1), "'min_worker' was unexpected"),
    (lambda c: c.__setitem__("max_workers", "8"), "is not of type 'integer'"),
    (lambda c: c.__setitem__("head_node_type", "ray.head.default"), "must be one of `available_node_types`"),
], ids=["typo-top-level", "typo-docker", "typo-node-type", "wrong-type", "unknown-head-type"])
def test_planted_errors_are_caught(validate, config, no_network, plant, expected):
    plant(config)
    errors = validate.launcher_errors(config)
    assert any(expected in e for e in errors), errors


def test_token_auth_spot_workers_and_loopback_dashboard(validate, config):
    assert validate.launcher_policy_errors(config) == []
    gpu = config["available_node_types"]["gpu_spot"]
    assert gpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert config["docker"]["image"] and gpu["docker"]["worker_image"]
    assert any("~/.ray/auth_token" in c and "umask 077" in c for c in config["setup_commands"])
    assert all("RAY_AUTH_MODE=token" in c for c in config["worker_start_ray_commands"] if "ray start" in c)
    assert "storage_path" in AWS.read_text()  # documented for jobs


def test_policy_catches_an_open_dashboard_and_a_token_in_a_command(validate, config):
    config["head_start_ray_commands"] = [c.replace("--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0")
                                         for c in config["head_start_ray_commands"]]
    config["setup_commands"].append("echo RAY_AUTH_TOKEN=abc > ~/.env")
    errors = validate.launcher_policy_errors(config)
    assert len(errors) == 2 and "dashboard-host" in errors[0] and "credential" in errors[1], errors
