"""The `shardnet` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from shardnet.config import CoordinatorConfig, WorkerConfig, add_flags, resolve
from shardnet.errors import ShardnetError
from shardnet.wallet import add_commands as add_wallet_commands
from shardnet.wallet import fmt_eth

DEFAULT_COORDINATOR = "127.0.0.1:8001"


class CliError(ShardnetError):
    """A problem with what the user typed or pointed at."""


def _serve(run, config) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run(config, stop)

    asyncio.run(main())
    return 0


def cmd_worker(args) -> int:
    from shardnet.node.worker import run_worker

    return _serve(run_worker, resolve(WorkerConfig, "worker", args))


def cmd_coordinator(args) -> int:
    from shardnet.coordinator.server import run_coordinator

    return _serve(run_coordinator, resolve(CoordinatorConfig, "coordinator", args))


def _load_inputs(path: Path, input_names: list[str]) -> dict[str, np.ndarray]:
    if not path.exists():
        raise CliError(f"input file {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CliError(f"cannot read {path} as .npy/.npz: {exc}") from exc
    if isinstance(data, np.ndarray):
        if len(input_names) != 1:
            raise CliError(
                f"the model has inputs {', '.join(input_names)}; "
                "pass a .npz with one array per input"
            )
        return {input_names[0]: data}
    with data:
        return {name: data[name] for name in data.files}


def _save_outputs(path: Path, outputs: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        if path.suffix == ".npy":
            if len(outputs) != 1:
                raise CliError(f"the model has {len(outputs)} outputs; write a .npz instead")
            np.save(f, next(iter(outputs.values())))
        else:
            np.savez(f, **outputs)
    tmp.replace(path)  # never leave a half-written output file


def cmd_submit(args) -> int:
    from tqdm import tqdm

    from shardnet.client import Client

    payer = None
    if args.pay:
        from shardnet.chain import Deployment
        from shardnet.client import Payer
        from shardnet.identity import Identity, read_passphrase

        if args.key_dir is None:
            raise CliError("--pay needs --key-dir (create keys with `shardnet keys new`)")
        identity = Identity.load(args.key_dir, read_passphrase(args.passphrase_file))
        payer = Payer(Deployment.load(args.chain), identity.account.key)
    with Client(args.coordinator, timeout_s=args.timeout) as client:
        sig = client.signature(args.model, args.version)
        inputs = _load_inputs(args.input, [t.name for t in sig.inputs])
        rows = (
            next(iter(inputs.values())).shape[0]
            if inputs and next(iter(inputs.values())).ndim
            else 1
        )
        t0 = time.monotonic()
        with tqdm(total=rows, unit="row", disable=None, file=sys.stderr) as bar:
            result = client.infer(
                args.model,
                inputs,
                outputs=args.output_name or (),
                version=args.version,
                batch_rows=args.batch_rows,
                progress=bar.update,
                payer=payer,
            )
        wall = time.monotonic() - t0
        settlements = [client.wait_settled(e) for e in result.escrow_jobs]
    out = args.output or args.input.with_name(args.input.stem + ".out.npz")
    _save_outputs(out, result.outputs)
    shapes = ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in result.outputs.items())
    workers = len({s["worker"] for s in result.shards})
    print(f"wrote {out}: {shapes}")
    print(
        f"{rows} rows in {wall:.2f}s over {len(result.job_ids)} request(s), "
        f"{len(result.shards)} shard(s) on {workers} worker(s)"
    )
    for s in settlements:
        print(
            f"escrow {s.escrow_job_id}: {s.status}, charged {fmt_eth(int(s.charge_wei))}"
            + (f", tx {s.tx_hash}" if s.tx_hash else "")
            + (f" ({s.last_error})" if s.last_error else "")
        )
    return 0


def cmd_workers(args) -> int:
    from shardnet.client import Client

    with Client(args.coordinator, timeout_s=10) as client:
        workers = client.workers()
    if not workers:
        print("no workers")
        return 0
    print(
        f"{'worker':<16} {'endpoint':<22} {'live':<5} {'cpus':>4} {'providers':<28} "
        f"{'models':<20} {'rows/s':>10} {'done':>6} {'failed':>6}"
    )
    for w in workers:
        hw = w.info.hardware
        rate = max(w.rows_per_second.values(), default=0.0)
        providers = ",".join(p.removesuffix("ExecutionProvider") for p in hw.execution_providers)
        print(
            f"{w.info.worker_id:<16} {w.info.endpoint:<22} {'yes' if w.live else 'no':<5} "
            f"{hw.cpu_count:>4} {providers:<28} "
            f"{','.join(m.name for m in w.info.models):<20} {rate:>10,.0f} "
            f"{w.shards_done:>6} {w.shards_failed:>6}"
        )
    return 0


def cmd_verdicts(args) -> int:
    from shardnet.client import Client

    with Client(args.coordinator, timeout_s=10) as client:
        verdicts = client.verdicts(args.job or "")
    if not verdicts:
        print("no verdicts")
    for v in verdicts:
        slash = f"slash {v.slash_status}" + (f" tx {v.slash_tx}" if v.slash_tx else "")
        print(
            f"#{v.id} job {v.job_id} shard {v.shard}: {v.outcome}, loser {v.loser or '-'} "
            f"(primary {v.primary_worker}, checker {v.checker_worker}, referee {v.referee}); "
            f"{slash}\n    {v.reason}"
        )
    return 0


def cmd_watch(args) -> int:
    from shardnet.events import parse_broker
    from shardnet.watch import run_watch

    broker = parse_broker(args.mqtt)
    if broker is None:
        raise CliError("--mqtt must name a broker host:port")
    args.mqtt_host, args.mqtt_port = broker
    return run_watch(args)


def cmd_demo_model(args) -> int:
    from shardnet.demo import write_demo_model

    print(write_demo_model(args.folder))
    return 0


def cmd_devnet(args) -> int:
    from shardnet.devnet import run_devnet

    if args.workers < 1 or args.rows < 1:
        raise CliError("--workers and --rows must be at least 1")
    worker_args = ["--intra-op-threads", str(args.intra_op_threads)]
    return run_devnet(
        workers=args.workers,
        rows=args.rows,
        workdir=args.dir,
        keep_running=args.keep_running,
        worker_args=worker_args,
        chain=not args.no_chain,
        cheat=args.cheat,
        spot_check_p=args.spot_check_p,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardnet", description="A decentralized inference network for ONNX models."
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("SHARDNET_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("worker", help="serve ONNX models and join a coordinator")
    add_flags(p, WorkerConfig)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("coordinator", help="accept jobs and shard them across workers")
    add_flags(p, CoordinatorConfig)
    p.set_defaults(func=cmd_coordinator)

    coordinator_flag = {
        "default": os.environ.get("SHARDNET_COORDINATOR", DEFAULT_COORDINATOR),
        "help": f"coordinator host:port (default: $SHARDNET_COORDINATOR or {DEFAULT_COORDINATOR})",
    }
    p = sub.add_parser("submit", help="run a model on .npy/.npz inputs through the network")
    p.add_argument("model", help="model name")
    p.add_argument(
        "input", type=Path, help=".npy (single-input models) or .npz (one array per input)"
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="output .npz (or .npy for one output); default: INPUT.out.npz",
    )
    p.add_argument("--coordinator", **coordinator_flag)
    p.add_argument("--version", default="", help="model sha256 to pin (default: most served)")
    p.add_argument("--output-name", action="append", help="return only this output (repeatable)")
    p.add_argument("--batch-rows", type=int, help="rows per request (default: ~32 MiB of input)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.set_defaults(func=cmd_submit)

    p.add_argument(
        "--pay",
        action="store_true",
        help="open an escrow per request at the quoted price (needs --key-dir)",
    )
    p.add_argument(
        "--chain",
        type=Path,
        default=Path("deployment.json"),
        help="deployment JSON, with --pay (default: ./deployment.json)",
    )
    p.add_argument("--key-dir", type=Path, help="the client's keys, with --pay")
    p.add_argument("--passphrase-file", type=Path, help="key passphrase file, with --pay")

    p = sub.add_parser("workers", help="list the workers a coordinator knows")
    p.add_argument("--coordinator", **coordinator_flag)
    p.set_defaults(func=cmd_workers)

    p = sub.add_parser("watch", help="follow a job or the whole network live over MQTT")
    p.add_argument(
        "--mqtt",
        default=os.environ.get("SHARDNET_MQTT", "127.0.0.1:1883"),
        help="MQTT broker host:port (default: $SHARDNET_MQTT or 127.0.0.1:1883)",
    )
    p.add_argument("--job", help="only this job id (ends when it settles or fails)")
    p.add_argument("--timeout", type=float, help="stop after this many seconds")
    p.add_argument("--json", action="store_true", help="print raw JSON events")
    p.add_argument("--heartbeats", action="store_true", help="include worker heartbeats")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("verdicts", help="list spot-check disputes and their outcome")
    p.add_argument("--coordinator", **coordinator_flag)
    p.add_argument("--job", help="only this job id")
    p.set_defaults(func=cmd_verdicts)

    add_wallet_commands(sub)

    p = sub.add_parser("demo-model", help="write the demo MLP (mlp.onnx) into a folder")
    p.add_argument("folder", type=Path)
    p.set_defaults(func=cmd_demo_model)

    p = sub.add_parser("devnet", help="run a local network, push a demo job through it, stop")
    p.add_argument("--workers", type=int, default=3, help="number of workers (default: 3)")
    p.add_argument("--rows", type=int, default=4096, help="rows in the demo job (default: 4096)")
    p.add_argument(
        "--intra-op-threads",
        type=int,
        default=1,
        help="onnxruntime threads per worker session (default: 1)",
    )
    p.add_argument("--dir", type=Path, help="keep models and logs here (default: a temp folder)")
    p.add_argument(
        "--cheat",
        choices=["noise", "zeros", "other-model", "replay"],
        help="also start a worker named 'cheater' that cheats this way "
        "(FAULT INJECTION), to watch it get caught",
    )
    p.add_argument(
        "--spot-check-p",
        type=float,
        default=0.1,
        help="probability that a shard is re-executed elsewhere (default: 0.1)",
    )
    p.add_argument("--no-chain", action="store_true", help="run without Anvil: unpaid jobs only")
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the network up after the demo job, until Ctrl-C",
    )
    p.set_defaults(func=cmd_devnet)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("web3").setLevel(logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, so `finally` blocks stop child processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return args.func(args)
    except ShardnetError as exc:
        print(f"shardnet: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("shardnet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
