"""docker/compose.yaml validates with docker-compose, and every spinenode command in it exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker" / "compose.yaml"


def test_compose_config_is_valid() -> None:
    env = {**os.environ, "SPINENODE_ADMIN_TOKEN": "test-token", "SPINENODE_WORKER_TOKEN": "worker-token",
           "FLOWER_BASIC_AUTH": "admin:test-secret"}
    r = subprocess.run(["/usr/bin/docker-compose", "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    config = yaml.safe_load(r.stdout)
    assert {"redis", "postgres", "node", "gpu-worker", "cpu-worker", "flower", "orthanc"} <= set(config["services"])
    gpu = config["services"]["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert all("healthcheck" in config["services"][s] for s in ("redis", "postgres", "node"))
    assert "--basic-auth=admin:test-secret" in config["services"]["flower"]["command"]  # tests/test_flower.py
    # no spool shared between the node and the workers: they reach it over DICOMweb
    def volumes(name: str) -> set[str]:
        return {str(v.get("source") if isinstance(v, dict) else v).split(":")[0]
                for v in config["services"][name].get("volumes", [])}

    for worker in ("gpu-worker", "cpu-worker"):
        env_w = config["services"][worker]["environment"]
        assert env_w["SPINENODE_NODE_URL"] == "http://node:8080" and env_w["SPINENODE_WORKER_TOKEN"] == "worker-token"
        assert not volumes(worker) & volumes("node"), worker


def _spinenode_commands(config: dict[str, Any]) -> list[list[str]]:
    """Commands of services whose image runs the ``spinenode`` entrypoint."""
    out = []
    for name, svc in config["services"].items():
        image = str(svc.get("image", ""))
        if not image.startswith("spinenode:") or svc.get("entrypoint"):
            continue
        out.append(list(svc.get("command") or ["serve"]))
    return out


def test_every_compose_command_is_a_real_cli_command() -> None:
    config = yaml.safe_load(COMPOSE.read_text())
    commands = _spinenode_commands(config)
    assert len(commands) == 3
    for argv in commands:
        r = subprocess.run([sys.executable, "-m", "spinenode_app.cli", *argv, "--help"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"spinenode {' '.join(argv)}: {r.stderr}"
    # the Dockerfiles' default commands too
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.cuda"):
        text = (REPO / "docker" / dockerfile).read_text()
        assert 'ENTRYPOINT ["spinenode"]' in text
