"""docker-compose.yml checked statically (no Docker engine runs here): every command parses
with the real CLI, ports and addresses line up, dependencies name real services, and the
Dockerfile copies every package folder pyproject.toml maps."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from shardnet.cli import build_parser
from shardnet.config import CoordinatorConfig, WorkerConfig, resolve

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


@pytest.mark.parametrize("name", list(SERVICES))
def test_command_parses_with_the_cli(name):
    args = build_parser().parse_args(SERVICES[name]["command"])
    if args.command == "worker":
        resolve(WorkerConfig, "worker", args, {})
    elif args.command == "coordinator":
        resolve(CoordinatorConfig, "coordinator", args, {})


def _flag(command, flag):
    return command[command.index(flag) + 1]


def test_ports_and_addresses_line_up():
    coordinator = SERVICES["coordinator"]
    port = _flag(coordinator["command"], "--port")
    assert any(p.split(":")[-1] == port for p in coordinator["ports"])
    assert _flag(SERVICES["worker"]["command"], "--coordinator") == f"coordinator:{port}"
    health = coordinator["healthcheck"]["test"]
    assert health[0] == "CMD" and health[health.index("--coordinator") + 1].endswith(f":{port}")
    build_parser().parse_args(health[2:])


def test_dependencies_name_services_and_volumes_exist():
    for name, service in SERVICES.items():
        for dep in service.get("depends_on", {}):
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            assert dep != name
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in COMPOSE["volumes"]
    assert SERVICES["worker"]["depends_on"]["models"]["condition"] == (
        "service_completed_successfully"
    )
    models_dir = _flag(SERVICES["worker"]["command"], "--models-dir")
    assert SERVICES["models"]["command"] == ["demo-model", models_dir]


def test_dockerfile_copies_every_package_folder():
    dockerfile = (ROOT / "Dockerfile").read_text()
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {p.split("/")[0] for p in package_dir["package-dir"].values()}
    for folder in folders | {"proto"}:
        assert f"COPY {folder} {folder}" in dockerfile
