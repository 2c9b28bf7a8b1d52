"""Run every benchmark, one after the other (they would steal each other's cores), each in
its own process, and print each one's output as it comes and a summary of run times.

    python benchmarks/run_all.py [--quick] [--only overhead_scaling latency ...] [--skip ...]

`--quick` passes `--quick` on to each script (fewer rounds, cells and requests: a smoke
run). Plots land in benchmarks/out/. Exits non-zero when a script failed; the others still
run. peer_ray is skipped, with a note, when `ray` is not importable.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Cheapest first, so a smoke run shows most before the long ones.
SCRIPTS = (
    "overhead_scaling",
    "latency",
    "spot_check_overhead",
    "chain_cost",
    "peer_ray",
    "detection",
)


def run(name: str, quick: bool) -> tuple[int, float]:
    args = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if quick else [])]
    print(f"\n=== {name} {'(quick)' if quick else ''}", flush=True)
    t0 = time.perf_counter()
    code = subprocess.run(args, check=False).returncode
    return code, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, default=list(SCRIPTS))
    parser.add_argument("--skip", nargs="+", choices=SCRIPTS, default=[])
    args = parser.parse_args()

    summary = []
    for name in [s for s in SCRIPTS if s in args.only and s not in args.skip]:
        if name == "peer_ray" and importlib.util.find_spec("ray") is None:
            summary.append((name, "skipped: ray is not installed (pip install -e '.[bench]')"))
            continue
        code, seconds = run(name, args.quick)
        summary.append((name, f"{'ok' if code == 0 else f'FAILED ({code})'}, {seconds:.0f}s"))

    print("\n=== summary")
    for name, outcome in summary:
        print(f"{name:<20} {outcome}")
    return 1 if any("FAILED" in outcome for _, outcome in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
