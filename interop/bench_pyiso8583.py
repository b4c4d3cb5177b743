"""Times pyiso8583 packing and unpacking the same `cup` 0200 sale that
posnet's criterion bench uses (crates/iso8583/benches/cup_sale_0200.json).
Run by scripts/bench-iso8583."""

import json
import pathlib
import sys
import timeit

import iso8583

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_iso8583_pyiso8583 import CUP_SPEC  # noqa: E402

FIXTURE = pathlib.Path(__file__).parent.parent / "crates/iso8583/benches/cup_sale_0200.json"


def main():
    sale = json.loads(FIXTURE.read_text())
    doc = {"t": sale["mti"], **{k: v.replace("=", "D") if k in ("35", "36") else v for k, v in sale["fields"].items()}}
    wire, _ = iso8583.encode(dict(doc), CUP_SPEC)
    wire = bytes(wire)

    def pack():
        iso8583.encode(dict(doc), CUP_SPEC)

    def unpack():
        iso8583.decode(wire, CUP_SPEC)

    for name, fn in (("pack", pack), ("unpack", unpack)):
        runs = 20000
        best = min(timeit.repeat(fn, number=runs, repeat=5)) / runs
        print(f"pyiso8583 {iso8583.__version__} cup_0200_sale/{name}: {best * 1e6:.2f} µs")


if __name__ == "__main__":
    main()
