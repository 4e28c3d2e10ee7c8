"""Generate appliance/rpc/ from proto/ with grpcio-tools (never edit the output by hand).

Usage: python scripts/gen_rpc.py [OUT_DIR]   (default: appliance/rpc)
The proto's folder is mapped onto the import path `appliance.rpc`, so the generated
modules import each other as `appliance.rpc.tts_pb2`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto" / "appliance" / "tts" / "v1"


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    # The mapped include makes the file's logical path appliance/rpc/tts.proto, so the
    # generated code lands in OUT/appliance/rpc/ and imports `appliance.rpc.tts_pb2`.
    args = [
        "protoc",
        f"-Iappliance/rpc={PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "appliance/rpc/tts.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> None:
    import shutil
    import tempfile

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "appliance" / "rpc"
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for f in (Path(tmp) / "appliance" / "rpc").iterdir():
            shutil.copy(f, target / f.name)


if __name__ == "__main__":
    main()
