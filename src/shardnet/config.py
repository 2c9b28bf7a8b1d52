"""One config model per process. Values come from, in increasing precedence: the model's
defaults, a TOML file (`--config`, section named after the process), `SHARDNET_<FIELD>`
environment variables, and command-line flags. The flags are generated from the model, so
every field is documented once, in its `description`."""

from __future__ import annotations

import argparse
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shardnet.errors import ShardnetError

ENV_PREFIX = "SHARDNET_"


class ConfigError(ShardnetError):
    """A config value is missing or invalid."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _NodeConfig(_Config):
    """Settings every long-running node (worker or coordinator) has."""

    max_request_mb: float = Field(
        256.0,
        gt=0,
        le=2047,
        description="largest request accepted, MiB (bigger: RESOURCE_EXHAUSTED); "
        "clients split big inputs into ~32 MiB requests",
    )
    ready_file: Path | None = Field(
        None,
        description="write {address, ...} as JSON here once serving (used by devnet and tests)",
    )
    mqtt: str = Field(
        "127.0.0.1:1883",
        description="MQTT broker host:port for live events ('' = no events); inference "
        "works without it",
    )
    p2p_listen: str = Field(
        "127.0.0.1:0", description="libp2p host:port for discovery ('' = no libp2p)"
    )
    bootstrap: list[str] = Field(
        default_factory=list,
        description="libp2p multiaddrs (/ip4/.../tcp/.../p2p/...) of peers to join",
    )
    chain: Path | None = Field(
        None,
        description="deployment JSON of the contracts (from `shardnet chain`); enables payment",
    )
    key_dir: Path | None = Field(
        None, description="folder with this node's encrypted keys (`shardnet keys new`)"
    )
    passphrase_file: Path | None = Field(
        None, description="file holding the key passphrase (else $SHARDNET_PASSPHRASE or a prompt)"
    )
    generate_keys: bool = Field(
        False, description="create the keys in --key-dir on first start if there are none"
    )
    faucet_wei: int = Field(
        0,
        ge=0,
        description="DEV CHAINS ONLY: top the node's address up to this from Anvil's "
        "well-known first account before using the chain",
    )


class WorkerConfig(_NodeConfig):
    models_dir: Path = Field(description="folder of *.onnx models to serve (name = file stem)")
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(0, ge=0, le=65535, description="port to listen on (0 = any free port)")
    advertise_host: str | None = Field(
        None,
        description="host the coordinator should dial (default: --host, or the hostname "
        "when --host is 0.0.0.0)",
    )
    coordinator: str | None = Field(
        None,
        description="coordinator host:port to register with directly (the static way; "
        "the default is discovery through --bootstrap)",
    )
    ad_interval_s: float = Field(2.0, gt=0, description="how often the worker gossips its ad")
    ad_ttl_s: float = Field(10.0, gt=0, description="how long an ad stays valid")
    price_per_row_wei: int = Field(0, ge=0, description="asking price put in the ad")
    worker_id: str | None = Field(None, description="name of this worker (default: random)")
    intra_op_threads: int = Field(
        0, ge=0, description="onnxruntime intra-op threads per session (0 = onnxruntime default)"
    )
    max_concurrency: int = Field(2, ge=1, description="shards computed at the same time")
    max_queue: int = Field(
        64, ge=0, description="shards waiting beyond max_concurrency before RESOURCE_EXHAUSTED"
    )
    providers: list[str] = Field(
        default_factory=list,
        description="onnxruntime execution providers in priority order "
        "(default: CUDA if present, then CPU)",
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime graph optimization level"
    )
    http_listen: str = Field(
        "127.0.0.1:0", description="host:port of Prometheus metrics (/metrics) ('' = off)"
    )
    plaintext: bool = Field(False, description="serve gRPC without TLS (local debugging only)")
    stake_wei: int = Field(
        0,
        ge=0,
        description="with --chain: register and stake this much if not staked yet "
        "(0 = expect to be staked already)",
    )
    fault: Literal["none", "noise", "zeros", "other-model", "replay"] = Field(
        "none",
        description="FAULT INJECTION for demos and tests: cheat on shards in this way "
        "(noise, zeros, a wrong model, replayed answers)",
    )
    fault_rate: float = Field(
        1.0, ge=0, le=1, description="with --fault: fraction of shards to cheat on"
    )
    fault_delay_s: float = Field(
        0.0,
        ge=0,
        description="FAULT INJECTION for tests and demos: hold every shard this long "
        "before computing it (a straggler)",
    )
    register_timeout_s: float = Field(
        5.0, gt=0, description="timeout of each call to the coordinator"
    )


class CoordinatorConfig(_NodeConfig):
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8001, ge=0, le=65535, description="port to listen on (0 = any free port)")
    shards_per_worker: int = Field(
        4, ge=1, description="shards in flight per worker for one job (pipelining)"
    )
    min_shard_rows: int = Field(8, ge=1, description="smallest shard worth sending on its own")
    shard_timeout_s: float = Field(
        60.0, gt=0, description="longest wait for one shard attempt before re-sending it elsewhere"
    )
    min_shard_timeout_s: float = Field(
        5.0, gt=0, description="shortest straggler timeout, however fast the worker is measured"
    )
    straggler_slack: float = Field(
        8.0, ge=1, description="a shard taking this many times its expected time is re-sent"
    )
    max_attempts: int = Field(4, ge=1, description="attempts per shard across workers")
    job_timeout_s: float = Field(300.0, gt=0, description="deadline of a job whose client set none")
    max_queue_delay_ms: float = Field(
        0.0,
        ge=0,
        description="dynamic batching: hold small unpaid requests up to this long to run "
        "them as one job (0 = off)",
    )
    max_batch_rows: int = Field(
        1024, ge=1, description="dynamic batching: rows at which a batch runs without waiting"
    )
    max_jobs: int = Field(
        64, ge=1, description="jobs in progress at once; more get RESOURCE_EXHAUSTED"
    )
    heartbeat_interval_s: float = Field(1.0, gt=0, description="how often workers heartbeat")
    worker_ttl_s: float = Field(4.0, gt=0, description="a worker silent for this long is dropped")
    ewma_alpha: float = Field(
        0.3, gt=0, le=1, description="weight of the newest throughput sample in the EWMA"
    )
    ledger: Path | None = Field(
        None,
        description="SQLite file of settlements and verdicts (default: in memory, lost on "
        "restart; required with --chain)",
    )
    spot_check_p: float = Field(
        0.1, ge=0, le=1, description="probability that a shard is re-executed on another worker"
    )
    spot_check_seed: str | None = Field(
        None, description="hex secret choosing the checked shards (default: random per run)"
    )
    tolerance: list[str] = Field(
        default_factory=list,
        description="float comparison tolerance DATATYPE=ATOL,RTOL over the defaults "
        "(FP32=1e-5,1e-4; FP16=2.5e-3,1e-3)",
    )
    referee_models_dir: Path | None = Field(
        None, description="models the coordinator runs itself to referee a disagreement"
    )
    http_listen: str = Field(
        "127.0.0.1:8002",
        description="host:port of the dashboard (/), its JSON (/api/state) and Prometheus "
        "metrics (/metrics) ('' = off)",
    )
    allow_plaintext_workers: bool = Field(
        False, description="accept workers serving plaintext gRPC (local debugging only)"
    )
    max_strikes: int = Field(1, ge=1, description="lost verdicts after which a worker is excluded")
    payment_policy: Literal["open", "required"] = Field(
        "open",
        description="open: requests without an escrow are served unpaid; "
        "required: they get FAILED_PRECONDITION",
    )
    price_per_row_wei: int = Field(10**12, ge=0, description="price quoted per input row")
    fee_bps: int = Field(500, ge=0, le=10_000, description="coordinator's share of each charge")
    min_deadline_s: int = Field(
        60, ge=1, description="an escrow must leave at least this long to settle"
    )
    settle_retry_s: float = Field(
        2.0, gt=0, description="retry period of settlements while the chain is unreachable"
    )
    stake_check_s: float = Field(
        15.0, gt=0, description="how often workers' stakes are re-checked on chain"
    )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def add_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """Add one flag per field; unset flags stay absent from the namespace (SUPPRESS)."""
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML config file")
    for name, field in model.model_fields.items():
        base = _base_type(field.annotation)
        default = (
            ""
            if field.is_required()
            else f" (default: {field.get_default(call_default_factory=True)})"
        )
        kwargs: dict[str, Any] = {
            "dest": name,
            "default": argparse.SUPPRESS,
            "help": (field.description or "") + default,
        }
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is list:
            kwargs["action"] = "append"
            kwargs["metavar"] = "VALUE"
        elif typing.get_origin(base) is Literal:
            kwargs["choices"] = typing.get_args(base)
        else:
            kwargs["metavar"] = name.upper()
        parser.add_argument(_flag(name), **kwargs)


def resolve(
    model: type[_Config],
    section: str,
    args: argparse.Namespace,
    environ: typing.Mapping[str, str] | None = None,
) -> Any:
    """Build the config model from file, environment and flags (later wins)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_file = getattr(args, "config", None)
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        values.update(data.get(section, {}))
    for name, field in model.model_fields.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            is_list = typing.get_origin(_base_type(field.annotation)) is list
            values[name] = [v for v in raw.split(",") if v] if is_list else raw
    values.update({k: v for k, v in vars(args).items() if k in model.model_fields})
    try:
        return model(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_flag(str(e['loc'][0])) if e['loc'] else section}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid {section} config: {problems}") from exc
