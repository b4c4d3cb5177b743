"""Times pyiso8583 packing and unpacking the 0200 sale of posnet's side-by-side
bench (crates/iso8583/benches/side_by_side_0200.json), in the three layouts of
crates/iso8583/benches/side_by_side.rs: `cup` (the spec written from
docs/iso8583-dialect.md in test_iso8583_pyiso8583.py), `iso87ascii`
(pyiso8583's own default_ascii) and `iso87ascii_binary_bitmap` (default_ascii
with raw-byte bitmaps, the layout iso8583_rs can write).

Before timing, each encoding must equal the expected bytes in
crates/iso8583/benches/side_by_side_0200_wire.json (which posnet and iso8583_rs are
checked against too) and decode back to the fixture's values.

Prints one JSON object: {"implementation": ..., "results": {layout: {op: µs}}},
each time the best of REPEAT runs of NUMBER calls (timeit), per call.
`--write-wire` rewrites side_by_side_0200_wire.json from pyiso8583's encodings
instead (after a deliberate change to the fixture). Run by scripts/bench-iso8583.
"""

import argparse
import copy
import json
import pathlib
import sys
import timeit

import iso8583
from iso8583.specs import default_ascii

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_iso8583_pyiso8583 import CUP_SPEC  # noqa: E402

BENCHES = pathlib.Path(__file__).parent.parent / "crates/iso8583/benches"
FIXTURE = BENCHES / "side_by_side_0200.json"
WIRE = BENCHES / "side_by_side_0200_wire.json"

BINARY_BITMAP_SPEC = copy.deepcopy(default_ascii)
for _bitmap in ("p", "1"):
    BINARY_BITMAP_SPEC[_bitmap].update(data_enc="b", max_len=8)

# Layout name, spec, and whether track data is BCD (separator '=' is nibble D).
LAYOUTS = [
    ("cup", CUP_SPEC, True),
    ("iso87ascii", default_ascii, False),
    ("iso87ascii_binary_bitmap", BINARY_BITMAP_SPEC, False),
]
TRACK_FIELDS = ("35", "36")


def document(sale, bcd_track):
    doc = {"t": sale["mti"]}
    for field, value in sale["fields"].items():
        doc[field] = value.replace("=", "D") if bcd_track and field in TRACK_FIELDS else value
    return doc


def best_per_call(fn, number, repeat):
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=5000, help="calls per timed run")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs; the best is kept")
    parser.add_argument("--write-wire", action="store_true", help="rewrite the expected wire bytes and exit")
    args = parser.parse_args()

    sale = json.loads(FIXTURE.read_text())
    wires = {}
    results = {}
    expected = {} if args.write_wire else json.loads(WIRE.read_text())
    for layout, spec, bcd_track in LAYOUTS:
        doc = document(sale, bcd_track)
        wire = bytes(iso8583.encode(dict(doc), spec)[0])
        wires[layout] = wire.hex().upper()
        if args.write_wire:
            continue
        if wires[layout] != expected[layout]:
            sys.exit(f"pyiso8583 {layout}: packed bytes differ from {WIRE}")
        decoded, _ = iso8583.decode(wire, spec)
        values = {k: v for k, v in decoded.items() if k.isdigit() and k != "1"}
        if decoded["t"] != doc["t"] or values != {k: v for k, v in doc.items() if k != "t"}:
            sys.exit(f"pyiso8583 {layout}: unpacked values differ from the fixture")

        def pack():
            return iso8583.encode(dict(doc), spec)

        def unpack():
            return iso8583.decode(wire, spec)

        def pack_unpack():
            return iso8583.decode(iso8583.encode(dict(doc), spec)[0], spec)

        results[layout] = {
            op: best_per_call(fn, args.number, args.repeat) * 1e6
            for op, fn in (("pack", pack), ("unpack", unpack), ("pack+unpack", pack_unpack))
        }

    if args.write_wire:
        WIRE.write_text(json.dumps(wires, indent=2) + "\n")
        return
    print(json.dumps({"implementation": f"pyiso8583 {iso8583.__version__}", "unit": "µs", "results": results}))


if __name__ == "__main__":
    main()
