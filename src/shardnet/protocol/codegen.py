"""Regenerate the committed gRPC stubs from proto/ (a developer tool; needs grpcio-tools).

    python -m shardnet.protocol.codegen          # rewrite the stubs in place
    python -m shardnet.protocol.codegen --check  # exit 1 if the committed stubs are stale

The .proto files live in the repository's top-level proto/ folder and are mapped onto the
virtual path shardnet/protocol/, so the generated modules import each other as
`shardnet.protocol.*_pb2` instead of as bare top-level modules.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO_DIR = PACKAGE_DIR.parents[2] / "proto"
VIRTUAL_PREFIX = "shardnet/protocol"
PROTOS = ("inference.proto", "shardnet_v1.proto")


def generated_names() -> list[str]:
    names = []
    for proto in PROTOS:
        stem = proto.removesuffix(".proto")
        names += [f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py"]
    return names


def generate(out_root: Path) -> Path:
    """Run protoc into `out_root`; return the folder holding the generated modules."""
    import grpc_tools
    from grpc_tools import protoc  # dev-only dependency

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"--proto_path={VIRTUAL_PREFIX}={PROTO_DIR}",
        f"--proto_path={well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(PROTO_DIR / p) for p in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return out_root / VIRTUAL_PREFIX


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = [
            n
            for n in generated_names()
            if not (PACKAGE_DIR / n).exists() or not filecmp.cmp(fresh / n, PACKAGE_DIR / n, False)
        ]
        if args.check:
            for name in stale:
                print(f"stale: src/shardnet/protocol/{name}", file=sys.stderr)
            if stale:
                print("run: python -m shardnet.protocol.codegen", file=sys.stderr)
            return 1 if stale else 0
        for name in generated_names():
            (PACKAGE_DIR / name).write_bytes((fresh / name).read_bytes())
        print(f"wrote {len(generated_names())} files to {PACKAGE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
