"""Config precedence: defaults < file < environment < flags, with readable errors."""

from __future__ import annotations

import argparse

import pytest

from shardnet.config import ConfigError, CoordinatorConfig, WorkerConfig, add_flags, resolve


def parse(model, argv):
    parser = argparse.ArgumentParser()
    add_flags(parser, model)
    return parser.parse_args(argv)


def test_flags_over_env_over_file(tmp_path):
    config_file = tmp_path / "shardnet.toml"
    config_file.write_text('[worker]\nmodels_dir = "/m"\nmax_concurrency = 3\nport = 7000\n')
    args = parse(WorkerConfig, ["--config", str(config_file), "--port", "7002"])
    env = {"SHARDNET_PORT": "7001", "SHARDNET_MAX_QUEUE": "5", "SHARDNET_PROVIDERS": "A,B"}
    config = resolve(WorkerConfig, "worker", args, env)
    assert (config.port, config.max_concurrency, config.max_queue) == (7002, 3, 5)
    assert config.providers == ["A", "B"]
    assert str(config.models_dir) == "/m"


def test_invalid_value_names_the_flag():
    with pytest.raises(ConfigError, match="--max-attempts"):
        resolve(
            CoordinatorConfig, "coordinator", parse(CoordinatorConfig, ["--max-attempts", "0"]), {}
        )


def test_missing_required_value():
    with pytest.raises(ConfigError, match="--models-dir"):
        resolve(WorkerConfig, "worker", parse(WorkerConfig, []), {})


def test_unreadable_config_file(tmp_path):
    args = parse(CoordinatorConfig, ["--config", str(tmp_path / "nope.toml")])
    with pytest.raises(ConfigError, match="cannot read config file"):
        resolve(CoordinatorConfig, "coordinator", args, {})
