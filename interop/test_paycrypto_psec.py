"""posnet's payment cryptography checked against psec, an independent
implementation (PyPI psec, interop/requirements.txt).

Every primitive gets at least 500 random cases per run, in both directions
where the primitive has two (psec encodes, posnet decodes, and the reverse).
The posnet binary ($POSNET_BIN) runs once per test in `posnet crypto batch`
mode: one JSON operation per stdin line, one JSON result per stdout line.
"""

import json
import os
import random
import subprocess

import pytest

from psec import des, mac, pinblock, tr31

# psec runs DES and 2-key TDES through `cryptography`, which warns that they
# are deprecated; that is the point of a payment peer, not a finding.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

CASES = 500
POSNET_BIN = os.environ.get("POSNET_BIN", "target/debug/posnet")
SEED = int(os.environ.get("PAYCRYPTO_SEED", random.randrange(1 << 30)))
RNG = random.Random(SEED)


@pytest.fixture(autouse=True)
def _print_seed():
    # Shown with a failure's captured output: rerun with PAYCRYPTO_SEED=<n>.
    print(f"PAYCRYPTO_SEED={SEED}")


def batch(ops):
    """Runs operations through `posnet crypto batch`; returns the results."""
    payload = "".join(json.dumps(op) + "\n" for op in ops)
    proc = subprocess.run(
        [POSNET_BIN, "crypto", "batch"],
        input=payload.encode(),
        capture_output=True,
        check=True,
        timeout=300,
    )
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(ops), proc.stderr.decode()
    return [json.loads(line) for line in lines]


def ok(results):
    for r in results:
        assert "ok" in r, r
    return [r["ok"] for r in results]


def digits(lo, hi):
    return "".join(RNG.choice("0123456789") for _ in range(RNG.randint(lo, hi)))


def rand_bytes(n):
    return bytes(RNG.getrandbits(8) for _ in range(n))


def test_format0_both_ways():
    cases = [(digits(4, 12), digits(13, 19)) for _ in range(CASES)]
    ours = ok(batch([{"op": "pinblock.encode", "format": 0, "pin": p, "pan": a} for p, a in cases]))
    theirs = [pinblock.encode_pinblock_iso_0(p, a).hex().upper() for p, a in cases]
    assert [o["clear_block"] for o in ours] == theirs
    decoded = ok(batch([{"op": "pinblock.decode", "format": 0, "block": b, "pan": a}
                        for b, (_, a) in zip(theirs, cases)]))
    assert [d["pin"] for d in decoded] == [p for p, _ in cases]


def test_format3_both_ways():
    cases = [(digits(4, 12), digits(13, 19)) for _ in range(CASES)]
    theirs = [pinblock.encode_pinblock_iso_3(p, a).hex().upper() for p, a in cases]
    decoded = ok(batch([{"op": "pinblock.decode", "format": 3, "block": b, "pan": a}
                        for b, (_, a) in zip(theirs, cases)]))
    assert [d["pin"] for d in decoded] == [p for p, _ in cases]
    ours = ok(batch([{"op": "pinblock.encode", "format": 3, "pin": p, "pan": a} for p, a in cases]))
    for o, (p, a) in zip(ours, cases):
        assert pinblock.decode_pinblock_iso_3(bytes.fromhex(o["clear_block"]), a) == p


def test_format4_both_ways():
    cases = [(digits(4, 12), digits(12, 19), rand_bytes(RNG.choice([16, 24, 32]))) for _ in range(CASES)]
    theirs = [pinblock.encipher_pinblock_iso_4(k, p, a).hex().upper() for p, a, k in cases]
    decoded = ok(batch([{"op": "pinblock.decode", "format": 4, "block": b, "pan": a, "key": k.hex()}
                        for b, (_, a, k) in zip(theirs, cases)]))
    assert [d["pin"] for d in decoded] == [p for p, _, _ in cases]
    ours = ok(batch([{"op": "pinblock.encode", "format": 4, "pin": p, "pan": a, "key": k.hex()}
                     for p, a, k in cases]))
    for o, (p, a, k) in zip(ours, cases):
        assert pinblock.decipher_pinblock_iso_4(k, bytes.fromhex(o["block"]), a) == p


@pytest.mark.parametrize("padding", [1, 2])
def test_retail_mac(padding):
    cases = [(rand_bytes(16), rand_bytes(RNG.randint(0, 64))) for _ in range(CASES)]
    ours = ok(batch([{"op": "mac", "alg": "x919", "key": k.hex(), "data": d.hex(), "padding": padding}
                     for k, d in cases]))
    theirs = [mac.generate_retail_mac(k[:8], k[8:], d, padding).hex().upper() for k, d in cases]
    assert [o["mac"] for o in ours] == theirs


def test_iso9797_alg1():
    cases = [(rand_bytes(RNG.choice([8, 16, 24])), rand_bytes(RNG.randint(0, 64))) for _ in range(CASES)]
    ours = ok(batch([{"op": "mac", "alg": "alg1", "key": k.hex(), "data": d.hex()} for k, d in cases]))
    theirs = [mac.generate_cbc_mac(k, d, 1).hex().upper() for k, d in cases]
    assert [o["mac"] for o in ours] == theirs


def cup_mac_reference(key, data):
    """The UnionPay POS 'ECB' MAC written from its published description,
    on psec's DES/TDES (an implementation independent of posnet's)."""
    data = data + b"\x00" * (-len(data) % 8)
    acc = bytes(8)
    for i in range(0, len(data), 8):
        acc = bytes(a ^ b for a, b in zip(acc, data[i:i + 8]))
    expanded = acc.hex().upper().encode()
    left = des.encrypt_tdes_ecb(key, expanded[:8])
    left = des.encrypt_tdes_ecb(key, bytes(a ^ b for a, b in zip(left, expanded[8:])))
    return left.hex().upper().encode()[:8]


def test_cup_mac():
    cases = [(rand_bytes(RNG.choice([8, 16])), rand_bytes(RNG.randint(0, 80))) for _ in range(CASES)]
    ours = ok(batch([{"op": "mac", "alg": "cup", "key": k.hex(), "data": d.hex()} for k, d in cases]))
    for o, (k, d) in zip(ours, cases):
        assert bytes.fromhex(o["mac"]) == cup_mac_reference(k, d)


# (key usage, mode of use) pairs both implementations accept.
USAGES = [("P0", "E"), ("P0", "D"), ("M3", "C"), ("M6", "G"), ("D0", "B"), ("K0", "E"), ("B0", "X")]


def tr31_case():
    version = RNG.choice("BD")
    if version == "B":
        kbpk = rand_bytes(RNG.choice([16, 24]))
        algorithm, key = "T", rand_bytes(RNG.choice([16, 24]))
    else:
        kbpk = rand_bytes(RNG.choice([16, 24, 32]))
        algorithm, key = RNG.choice([("A", rand_bytes(RNG.choice([16, 24, 32]))), ("T", rand_bytes(16))])
    usage, mode = RNG.choice(USAGES)
    export = RNG.choice("ENS")
    header = f"{version}0000{usage}{algorithm}{mode}{RNG.randint(0, 99):02}{export}0000"
    return kbpk, header, key


def test_tr31_psec_wraps_posnet_unwraps():
    cases = [tr31_case() for _ in range(CASES)]
    blocks = [tr31.wrap(kbpk, header, key) for kbpk, header, key in cases]
    ours = ok(batch([{"op": "tr31.unwrap", "kbpk": kbpk.hex(), "block": b}
                     for b, (kbpk, _, _) in zip(blocks, cases)]))
    for o, (_, header, key) in zip(ours, cases):
        assert o["key"] == key.hex().upper()
        assert o["key_usage"] == header[5:7] and o["mode_of_use"] == header[8]
        assert o["exportability"] == header[11] and o["key_version"] == header[9:11]


def test_tr31_posnet_wraps_psec_unwraps():
    cases = [tr31_case() for _ in range(CASES)]
    ours = ok(batch([{"op": "tr31.wrap", "kbpk": kbpk.hex(), "header": header, "key": key.hex()}
                     for kbpk, header, key in cases]))
    for o, (kbpk, header, key) in zip(ours, cases):
        h, unwrapped = tr31.unwrap(kbpk, o["block"])
        assert unwrapped == key
        assert str(h)[5:16] == header[5:16]


def test_tr31_tampered_block_is_rejected():
    cases = [tr31_case() for _ in range(100)]
    blocks = []
    for kbpk, header, key in cases:
        b = tr31.wrap(kbpk, header, key)
        i = RNG.randrange(16, len(b))
        flipped = "0" if b[i] != "0" else "1"
        blocks.append((kbpk, b[:i] + flipped + b[i + 1:]))
    results = batch([{"op": "tr31.unwrap", "kbpk": k.hex(), "block": b} for k, b in blocks])
    assert all("error" in r for r in results)
