"""posnet's ISO 8583 codec against pyiso8583, an independent implementation.

For each dialect, random messages go both ways: encoded by pyiso8583 and
decoded by posnet, and encoded by posnet and decoded by pyiso8583, compared
field by field; the two encoders must also produce identical bytes.

The `cup` spec below is written from docs/iso8583-dialect.md; the
`iso87ascii` spec is pyiso8583's own `default_ascii`. posnet's field table
(`posnet iso8583 fields --json`) is used only to choose valid random values.
"""

import copy
import json
import string

import iso8583
import pytest
from iso8583.specs import default_ascii

from conftest import run_json, run_lines

MESSAGES_PER_DIRECTION = 1000


def _bcd(max_len, len_type=0, align="left"):
    spec = {"data_enc": "b", "len_enc": "bcd", "len_type": len_type, "max_len": max_len, "len_count": "nibbles"}
    spec["right_pad" if align == "left" else "left_pad"] = "0"
    return spec


def _ascii(max_len, len_type=0):
    return {"data_enc": "ascii", "len_enc": "bcd", "len_type": len_type, "max_len": max_len}


def _binary(max_len, len_type=0):
    return {"data_enc": "b", "len_enc": "bcd", "len_type": len_type, "max_len": max_len}


# The `cup` dialect as docs/iso8583-dialect.md describes it: BCD MTI, binary
# bitmaps, BCD numerics (LL prefix one BCD byte, LLL two), ASCII text fields.
CUP_SPEC = {
    "h": {"data_enc": "b", "len_enc": "bcd", "len_type": 0, "max_len": 0},
    "t": {"data_enc": "b", "len_enc": "bcd", "len_type": 0, "max_len": 2},
    "p": {"data_enc": "b", "len_enc": "bcd", "len_type": 0, "max_len": 8},
    "1": {"data_enc": "b", "len_enc": "bcd", "len_type": 0, "max_len": 8},
    "2": _bcd(19, 1),
    "3": _bcd(6),
    "4": _bcd(12),
    "11": _bcd(6),
    "12": _bcd(6),
    "13": _bcd(4),
    "14": _bcd(4),
    "15": _bcd(4),
    "22": _bcd(3),
    "23": _bcd(3, align="right"),
    "25": _bcd(2),
    "26": _bcd(2),
    "32": _bcd(11, 1),
    "35": _bcd(37, 1),
    "36": _bcd(104, 2),
    "37": _ascii(12),
    "38": _ascii(6),
    "39": _ascii(2),
    "41": _ascii(8),
    "42": _ascii(15),
    "44": _ascii(25, 1),
    "48": _bcd(322, 2),
    "49": _ascii(3),
    "52": _binary(16, 1),
    "53": _bcd(16),
    "54": _ascii(20, 2),
    "55": _binary(255, 2),
    "60": _bcd(17, 2),
    "61": _bcd(29, 2),
    "62": _binary(512, 2),
    "63": _ascii(163, 2),
    "64": _binary(8),
    "90": _bcd(42),
    "100": _bcd(11, 1),
    "102": _ascii(28, 1),
    "103": _ascii(28, 1),
    "128": _binary(8),
}

SPECS = {"cup": CUP_SPEC, "iso87ascii": default_ascii}

CHARSETS = {
    "n": string.digits,
    "z": string.digits + "=",
    "an": string.ascii_letters + string.digits,
    "ans": "".join(chr(c) for c in range(0x20, 0x7F)),
}


def field_table(posnet_bin, dialect):
    return {str(f["field"]): f for f in run_json(posnet_bin, ["iso8583", "fields", "--dialect", dialect, "--json"])}


def random_message(rng, table):
    """A random valid message as posnet's JSON shows it (binary as hex, track separator '=')."""
    numbers = sorted(table, key=int)
    fields = {}
    for number in rng.sample(numbers, rng.randint(0, min(len(numbers), 20))):
        f = table[number]
        length = f["max"] if f["prefix_digits"] == 0 else rng.randint(0, f["max"])
        if f["content"] == "b":
            nbytes = length // 2 if f["units"] == "hex characters" else length
            fields[number] = "".join(rng.choice("0123456789ABCDEF") for _ in range(nbytes * 2))
        else:
            fields[number] = "".join(rng.choice(CHARSETS[f["content"]]) for _ in range(length))
    mti = f"{rng.randint(0, 9)}{rng.randint(1, 8)}{rng.randint(0, 5)}{rng.randint(0, 5)}"
    return {"mti": mti, "fields": fields}


def to_pyiso(dialect, message, table):
    """posnet's JSON form to a pyiso8583 document for `dialect`."""
    doc = {"t": message["mti"]}
    for number, value in message["fields"].items():
        if dialect == "cup" and table[number]["content"] == "z":
            value = value.replace("=", "D")  # BCD track data: separator is nibble D
        doc[number] = value
    return doc


def from_pyiso(dialect, doc, table):
    fields = {}
    for key, value in doc.items():
        if not key.isdigit() or key == "1":
            continue
        if dialect == "cup" and table[key]["content"] == "z":
            value = value.replace("D", "=")
        fields[key] = value
    return {"mti": doc["t"], "fields": fields}


@pytest.mark.parametrize("dialect", ["cup", "iso87ascii"])
def test_tables_agree_on_lengths(posnet_bin, dialect):
    """Every field posnet defines has the same length form and maximum as the pyiso8583 spec."""
    spec = SPECS[dialect]
    for number, f in field_table(posnet_bin, dialect).items():
        s = spec[number]
        prefix_bytes = {0: 0, 2: 2 if s["len_enc"] == "ascii" else 1, 3: 3 if s["len_enc"] == "ascii" else 2}
        assert s["len_type"] == prefix_bytes[f["prefix_digits"]], f"field {number} length form"
        assert s["max_len"] == f["max"], f"field {number} maximum"


@pytest.mark.parametrize("dialect", ["cup", "iso87ascii"])
def test_pyiso8583_encodes_posnet_decodes(posnet_bin, rng, dialect):
    table = field_table(posnet_bin, dialect)
    messages = [random_message(rng, table) for _ in range(MESSAGES_PER_DIRECTION)]
    wire = [iso8583.encode(to_pyiso(dialect, m, table), SPECS[dialect])[0].hex().upper() for m in messages]
    out, proc = run_lines(posnet_bin, ["iso8583", "decode", "--dialect", dialect, "--show-pan"], wire)
    assert proc.returncode == 0, proc.stderr
    for sent, hex_text, line in zip(messages, wire, out):
        assert json.loads(line) == sent, f"posnet decoded {hex_text} differently"


@pytest.mark.parametrize("dialect", ["cup", "iso87ascii"])
def test_posnet_encodes_pyiso8583_decodes(posnet_bin, rng, dialect):
    table = field_table(posnet_bin, dialect)
    messages = [random_message(rng, table) for _ in range(MESSAGES_PER_DIRECTION)]
    out, proc = run_lines(posnet_bin, ["iso8583", "encode", "--dialect", dialect], [json.dumps(m) for m in messages])
    assert proc.returncode == 0, proc.stderr
    for sent, hex_text in zip(messages, out):
        decoded, _ = iso8583.decode(bytes.fromhex(hex_text), copy.deepcopy(SPECS[dialect]))
        assert from_pyiso(dialect, decoded, table) == sent, f"pyiso8583 decoded {hex_text} differently"
        expected, _ = iso8583.encode(to_pyiso(dialect, sent, table), SPECS[dialect])
        assert bytes(expected).hex().upper() == hex_text, "the two encoders disagree on bytes"


@pytest.mark.parametrize("dialect", ["cup", "iso87ascii"])
def test_bad_input_is_reported_with_field_and_offset(posnet_bin, dialect):
    table = field_table(posnet_bin, dialect)
    good = iso8583.encode(to_pyiso(dialect, {"mti": "0200", "fields": {"3": "000000"}}, table), SPECS[dialect])[0]
    truncated = bytes(good[:-1]).hex()
    out, proc = run_lines(posnet_bin, ["iso8583", "decode", "--dialect", dialect], [truncated, bytes(good).hex()])
    assert proc.returncode == 1
    error = json.loads(out[0])["error"]
    assert "field 3" in error and "offset" in error and "truncated" in error
    assert json.loads(out[1])["fields"] == {"3": "000000"}, "a bad line does not stop the batch"
