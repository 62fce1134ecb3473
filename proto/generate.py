"""Generate the Python code of proto/*.proto into ciliumctl/flows/pb (run by `make proto`).

protoc writes imports relative to the proto root ("from flow import flow_pb2"); they are rewritten to the
package path so that the generated modules import as ciliumctl.flows.pb.*. The .proto paths themselves stay
"flow/flow.proto" etc., as in Hubble, so descriptors carry the same file names."""

import re
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
OUT = ROOT.parent / "ciliumctl" / "flows" / "pb"
FILES = ["flow/flow.proto", "relay/relay.proto", "observer/observer.proto", "batch/batch.proto"]
_IMPORT = re.compile(r"^from (flow|relay|observer|batch)(\.\w+)? import", re.M)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={OUT}", f"--grpc_python_out={OUT}", *FILES]
    if protoc.main(args) != 0:
        return 1
    for sub in ("", "flow", "relay", "observer", "batch"):
        (OUT / sub).mkdir(exist_ok=True)
        init = OUT / sub / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from proto/ by `make proto`; do not edit."""\n' if not sub else "")
    for path in OUT.rglob("*_pb2*.py"):
        text = path.read_text()
        new = _IMPORT.sub(lambda m: f"from ciliumctl.flows.pb.{m.group(1)}{m.group(2) or ''} import", text)
        path.write_text(new)
    # services are only in observer.proto; protoc writes empty grpc stubs for the others
    for empty in ("flow/flow_pb2_grpc.py", "relay/relay_pb2_grpc.py"):
        (OUT / empty).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
