"""docker-compose.yml checked statically (no Docker engine runs here): every shardnet
command parses with the real CLI and config, ports and addresses line up, environment
variables are ones shardnet reads, volumes exist, and dependencies form a start order that
puts the chain and the models before the coordinator, and the coordinator before workers."""

from __future__ import annotations

import graphlib
import tomllib
from pathlib import Path

import pytest
import yaml

from shardnet.cli import build_parser
from shardnet.config import CoordinatorConfig, WorkerConfig, resolve
from shardnet.identity import PASSPHRASE_ENV

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
OURS = {name: s for name, s in SERVICES.items() if s.get("image") == "shardnet:dev"}


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def port_of(address: str) -> str:
    return address.rsplit(":", 1)[1]


def published(service: dict) -> set[str]:
    return {p.split(":")[-1].split()[0] for p in service.get("ports", [])}


@pytest.mark.parametrize("name", list(OURS))
def test_command_parses_with_the_cli(name):
    service = OURS[name]
    args = build_parser().parse_args(service["command"])
    env = {k: str(v) for k, v in service.get("environment", {}).items()}
    if args.command == "worker":
        resolve(WorkerConfig, "worker", args, env)
    elif args.command == "coordinator":
        resolve(CoordinatorConfig, "coordinator", args, env)


def test_environment_is_what_shardnet_reads():
    for service in OURS.values():
        for key in service.get("environment", {}):
            assert key == PASSPHRASE_ENV or key.startswith("SHARDNET_")


def test_ports_and_addresses_line_up():
    coordinator = SERVICES["coordinator"]["command"]
    worker = SERVICES["worker"]["command"]
    chain = SERVICES["chain"]["command"]
    port = flag(coordinator, "--port")
    assert {port, port_of(flag(coordinator, "--http-listen"))} <= published(SERVICES["coordinator"])
    assert flag(worker, "--coordinator") == f"coordinator:{port}"
    assert flag(chain, "--rpc-url") == f"http://chain:{flag(chain, '--port')}"
    assert flag(chain, "--port") in published(SERVICES["chain"])
    for command in (coordinator, worker):
        assert flag(command, "--mqtt") == "mosquitto:1883"
        assert flag(command, "--chain") == flag(chain, "--dir") + "/deployment.json"
    assert "1883" in published(SERVICES["mosquitto"])
    health = SERVICES["coordinator"]["healthcheck"]["test"]
    assert health[0] == "CMD" and port_of(flag(health, "--coordinator")) == port
    build_parser().parse_args(health[2:])
    # Workers stake at least the minimum the chain command deploys with.
    assert int(flag(worker, "--stake-wei")) >= 10**18


def test_dependencies_give_the_right_start_order():
    graph = {name: set(s.get("depends_on", {})) for name, s in SERVICES.items()}
    for name, deps in graph.items():
        assert deps <= set(SERVICES), f"{name} depends on an unknown service"
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises on a cycle
    assert order.index("chain") < order.index("coordinator") < order.index("worker")
    assert order.index("models") < order.index("coordinator")
    assert order.index("mosquitto") < order.index("coordinator")
    conditions = SERVICES["worker"]["depends_on"]
    assert conditions["coordinator"]["condition"] == "service_healthy"
    assert conditions["models"]["condition"] == "service_completed_successfully"


def test_volumes_exist_and_models_are_shared():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in COMPOSE["volumes"], name
    models_dir = flag(SERVICES["worker"]["command"], "--models-dir")
    assert SERVICES["models"]["command"] == ["demo-model", models_dir]


def test_dockerfile_copies_every_package_folder():
    dockerfile = (ROOT / "Dockerfile").read_text()
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {p.split("/")[0] for p in package_dir["package-dir"].values()}
    for folder in folders | {"proto", "contracts"}:
        assert f"COPY {folder} {folder}" in dockerfile
