"""Generate the Python gRPC modules from protos/runhistory.proto, or check they are current.

    python protos/generate.py          # write protos/runhistory_pb2*.py(i)
    python protos/generate.py --check  # exit 1 if the checked-in modules are stale

The proto is compiled under the virtual path `runhistory/protos/`, so the generated
modules import each other as `runhistory.protos.*`: the package that `protos/` installs as.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PROTO = "runhistory.proto"
GENERATED = ("runhistory_pb2.py", "runhistory_pb2.pyi", "runhistory_pb2_grpc.py")


def generate(out: Path) -> None:
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{include}",
        f"-Irunhistory/protos={HERE}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"runhistory/protos/{PROTO}",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the modules are stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        produced = Path(tmp) / "runhistory" / "protos"
        stale = [
            name
            for name in GENERATED
            if not (HERE / name).exists() or not filecmp.cmp(produced / name, HERE / name, False)
        ]
        if args.check:
            if stale:
                print(
                    f"stale generated gRPC code: {', '.join(stale)}; run python protos/generate.py"
                )
                return 1
            print("generated gRPC code is current")
            return 0
        for name in GENERATED:
            shutil.copyfile(produced / name, HERE / name)
        print(f"wrote {', '.join(GENERATED)} in {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
