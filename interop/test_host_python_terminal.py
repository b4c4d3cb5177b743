"""An independent terminal, written in Python, against the real posnet host.

PYTEST_DONT_REWRITE: failures say what failed in their own words and never
dump a message (it holds a card number) or a key.

The host is the `posnet` binary ($POSNET_BIN) run as an operator would:
`posnet ca init`, `posnet host accounts import`, `posnet host enroll`,
`posnet ca export-transport-key`, then `posnet host run` as a subprocess,
stopped with SIGTERM at the end.

Nothing on the terminal side comes from posnet:
- TLS: Python's `ssl` module, TLS 1.2 or later, the enrollment bundle's
  client certificate, the deployment CA, server name `localhost`;
- key loading: psec's TR-31 unwrap of the DUKPT initial key (version D,
  usage B1) under the exported key-transport key;
- AES DUKPT (ANSI X9.24-3-2017) terminal side: written below from the
  standard over `cryptography`'s AES, and checked against the X9.24-3 test
  vectors (crates/paycrypto/tests/vectors/dukpt-aes.toml) before it is used;
- messages: pyiso8583 with the `cup` spec dict written by hand from
  docs/iso8583-dialect.md (CUP_SPEC of test_iso8583_pyiso8583.py, shared
  rather than copied), framed here (2-byte length, TPDU, 6-byte header);
- MAC: the first 8 bytes of `cryptography`'s AES-CMAC over MTI..field 63;
- PIN blocks: ISO 9564 format 4, enciphered with psec's
  `encipher_pinblock_iso_4` (psec implements format 4 AES encipherment).

The tests share one host and one terminal and run in file order, as a
terminal's day does: sign-on, echo, sales and declines, a reversal, a MAC
failure, settlement balanced and not balanced with batch upload, shutdown.
"""

import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import iso8583
import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from psec import pinblock, tr31

from test_iso8583_pyiso8583 import CUP_SPEC

REPO = Path(__file__).resolve().parent.parent
DUKPT_VECTORS = REPO / "crates" / "paycrypto" / "tests" / "vectors" / "dukpt-aes.toml"

TERMINAL_ID = "T0000009"
MERCHANT_ID = "M00000000000009"
MERCHANT_NAME = "Python Test Mart"
CNY = "156"
TERMINAL_MAX = 60_000
OFFLINE_FLOOR = 2_000

# TPDU 60 0001 0000 and a 6-byte header (application type, version,
# terminal status, processing request, reserved) the host must carry back.
TPDU = bytes.fromhex("6000010000")
TPDU_REPLY = bytes.fromhex("6000000001")
HEADER = bytes.fromhex("602200310000")
MAX_FRAME = 4096
IO_TIMEOUT = 10


# ---------------------------------------------------------------------------
# AES DUKPT, ANSI X9.24-3-2017, terminal side.

# Key usage indicators (X9.24-3 table "Key Usage Indicator").
KEY_DERIVATION = 0x8000
KEY_DERIVATION_INITIAL_KEY = 0x8001
PIN_ENCRYPTION = 0x1000
MAC_GENERATION = 0x2000
MAC_VERIFICATION = 0x2001
MAC_BOTH_WAYS = 0x2002
DATA_ENCRYPT = 0x3000
DATA_DECRYPT = 0x3001
DATA_BOTH_WAYS = 0x3002

# Key types: (algorithm indicator, length in bits).
TDEA2 = (0x0000, 128)
TDEA3 = (0x0001, 192)
AES128 = (0x0002, 128)
AES192 = (0x0003, 192)
AES256 = (0x0004, 256)

# X9.24-3 caps the 32-bit transaction counter at 16 one bits.
MAX_COUNTER_BITS = 16


def aes_ecb(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def derivation_data(usage: int, key_type, ikid: bytes, counter: int) -> bytes:
    """The 16-byte derivation data block: version 01, block counter 01 (set
    per block by derive_key), key usage, algorithm, length in bits, then the
    initial key id for the initial key, else its right 4 bytes and the counter."""
    algorithm, bits = key_type
    assert len(ikid) == 8
    tail = ikid if usage == KEY_DERIVATION_INITIAL_KEY else ikid[4:] + counter.to_bytes(4, "big")
    return bytes([0x01, 0x01]) + struct.pack(">HHH", usage, algorithm, bits) + tail


def derive_key(derivation_key: bytes, key_type, data: bytes) -> bytes:
    """AES-ECB of the derivation data under the derivation key, one block per
    128 bits of the derived key (block counter 1, 2, ...), truncated."""
    bits = key_type[1]
    out = b""
    for block_counter in range(1, (bits + 127) // 128 + 1):
        out += aes_ecb(derivation_key, data[:1] + bytes([block_counter]) + data[2:])
    return out[: bits // 8]


def key_type_of(key: bytes):
    return {16: AES128, 24: AES192, 32: AES256}[len(key)]


def initial_key(bdk: bytes, ikid: bytes) -> bytes:
    """The host side's one step, checked too since it shares derivation_data."""
    kt = key_type_of(bdk)
    return derive_key(bdk, kt, derivation_data(KEY_DERIVATION_INITIAL_KEY, kt, ikid, 0))


def transaction_key(ik: bytes, ikid: bytes, counter: int) -> bytes:
    """Walks the counter's one bits from the most significant: each adds the
    bit to a working counter and derives the next intermediate key from it."""
    assert 0 < counter < 1 << 32 and counter.bit_count() <= MAX_COUNTER_BITS
    kt = key_type_of(ik)
    key, working = ik, 0
    for bit in range(31, -1, -1):
        mask = 1 << bit
        if counter & mask:
            working |= mask
            key = derive_key(key, kt, derivation_data(KEY_DERIVATION, kt, ikid, working))
    return key


def working_key(tk: bytes, ikid: bytes, counter: int, usage: int, key_type=AES128) -> bytes:
    return derive_key(tk, key_type, derivation_data(usage, key_type, ikid, counter))


def next_counter(counter: int) -> int:
    """The next counter with at most 16 one bits (skipping the others)."""
    counter += 1
    while counter.bit_count() > MAX_COUNTER_BITS:
        counter += counter & -counter
    assert counter < 1 << 32, "DUKPT counter exhausted"
    return counter


def split_ksn(ksn_hex: str):
    ksn = bytes.fromhex(ksn_hex)
    return ksn[:8], int.from_bytes(ksn[8:], "big")


def check_dukpt_against_vectors():
    """Every X9.24-3 vector of dukpt-aes.toml: initial keys, transaction
    keys, counter 1's working keys, and the format 4 PIN block."""
    vectors = tomllib.loads(DUKPT_VECTORS.read_text())
    usages = {
        "pin_encryption": (PIN_ENCRYPTION, AES128),
        "mac_generation": (MAC_GENERATION, AES128),
        "mac_verification": (MAC_VERIFICATION, AES128),
        "mac_both": (MAC_BOTH_WAYS, AES128),
        "data_encrypt": (DATA_ENCRYPT, AES128),
        "data_decrypt": (DATA_DECRYPT, AES128),
        "data_both": (DATA_BOTH_WAYS, AES128),
        "pin_encryption_2tdea": (PIN_ENCRYPTION, TDEA2),
        "pin_encryption_3tdea": (PIN_ENCRYPTION, TDEA3),
    }
    checked = 0
    for name in ("aes128", "aes256"):
        v = vectors[name]
        ikid = bytes.fromhex(v["initial_key_id"])
        ik = bytes.fromhex(v["initial_key"])
        assert initial_key(bytes.fromhex(v["bdk"]), ikid) == ik, f"{name} initial key"
        for t in v["transaction"]:
            t_ikid, counter = split_ksn(t["ksn"])
            assert t_ikid == ikid
            assert transaction_key(ik, ikid, counter).hex().upper() == t["transaction_key"], f"{name} {t['ksn']}"
            checked += 1
        wk = v["working_keys_counter_1"]
        _, counter = split_ksn(wk["ksn"])
        tk = transaction_key(ik, ikid, counter)
        if "transaction_key" in wk:
            assert tk.hex().upper() == wk["transaction_key"]
        # The AES-256 set's working key is an AES-256 PIN key.
        for key_name, (usage, key_type) in usages.items():
            if key_name not in wk:
                continue
            if name == "aes256":
                key_type = AES256
            got = working_key(tk, ikid, counter, usage, key_type)
            assert got.hex().upper() == wk[key_name], f"{name} {key_name}"
            checked += 1
    pb = vectors["aes128"]["pin_block"]
    v = vectors["aes128"]
    ikid, counter = split_ksn(pb["ksn"])
    pin_key = working_key(transaction_key(bytes.fromhex(v["initial_key"]), ikid, counter), ikid, counter, PIN_ENCRYPTION)
    block = bytes.fromhex(pb["enciphered_pin_block"])
    assert pinblock.decipher_pinblock_iso_4(pin_key, block, pb["pan"]) == pb["pin"]
    dec = Cipher(algorithms.AES(pin_key), modes.ECB()).decryptor()
    intermediate = dec.update(block) + dec.finalize()
    b = bytes(x ^ y for x, y in zip(intermediate, bytes.fromhex(pb["plain_pan_field"])))
    dec = Cipher(algorithms.AES(pin_key), modes.ECB()).decryptor()
    assert (dec.update(b) + dec.finalize()).hex().upper() == pb["plain_pin_field"]
    return checked


# ---------------------------------------------------------------------------
# Host setup with the real binary.


def luhn(prefix: str) -> str:
    """prefix with its Luhn check digit appended."""
    total = 0
    for i, d in enumerate(reversed(prefix)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return prefix + str((10 - total % 10) % 10)


def mask(pan: str) -> str:
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


@dataclass
class Card:
    pan: str
    pin: str = field(repr=False)
    balance: int

    def __repr__(self):
        return f"Card({mask(self.pan)}, balance={self.balance})"


class Msg(dict):
    """A message document (pyiso8583's decoded form) whose repr, shown in
    failure tracebacks, masks the card number and hides PIN and track data."""

    HIDDEN = ("35", "36", "52")

    def __repr__(self):
        shown = {
            k: mask(v) if k == "2" else "<hidden>" if k in self.HIDDEN else v
            for k, v in self.items()
        }
        return f"Msg({shown!r})"


RICH = Card(luhn("621234000000001"), "1234", 100_000)  # 1,000.00
POOR = Card(luhn("621234000000002"), "4321", 5_000)  # 50.00

SEED = f"""
[[merchant]]
merchant_id = "{MERCHANT_ID}"
name = "{MERCHANT_NAME}"
currency = {CNY}
max_amount = 1000000

[[card]]
pan = "{RICH.pan}"
expiry = "3012"
pin = "{RICH.pin}"
balance = {RICH.balance}
per_txn_limit = 50000
daily_limit = 80000
currency = {CNY}
holder = "approved with PIN"

[[card]]
pan = "{POOR.pan}"
expiry = "3012"
pin = "{POOR.pin}"
balance = {POOR.balance}
per_txn_limit = 50000
daily_limit = 80000
currency = {CNY}
holder = "insufficient funds"
"""


def clean_env():
    # Whatever master key or host settings the caller has must not leak in:
    # the deployment's generated D/master.key is the one to use.
    return {k: v for k, v in os.environ.items() if not k.startswith("POSNET_")}


def posnet(posnet_bin, *args):
    proc = subprocess.run(
        [posnet_bin, *args], capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert proc.returncode == 0, f"posnet {' '.join(args)}: {proc.stderr}"
    return proc.stdout


@dataclass
class Host:
    proc: subprocess.Popen
    address: tuple
    bundle: dict = field(repr=False)  # holds the terminal's private key
    ktk: bytes = field(repr=False)
    files: Path
    stderr_path: Path

    def stderr(self):
        return self.stderr_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def host(posnet_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("python-terminal")
    deployment, data = d / "deployment", d / "host"
    posnet(posnet_bin, "ca", "init", "--dir", str(deployment))
    assert (deployment / "master.key").exists()
    (d / "seed.toml").write_text(SEED)
    host_args = ["host", "--data-dir", str(data), "--deployment-dir", str(deployment)]
    imported = json.loads(posnet(posnet_bin, *host_args, "accounts", "import", str(d / "seed.toml")))
    assert [m["result"] for m in imported["merchants"]] == ["created"]
    assert [c["result"] for c in imported["cards"]] == ["created", "created"]
    posnet(
        posnet_bin, *host_args, "enroll",
        "--terminal-id", TERMINAL_ID, "--merchant-id", MERCHANT_ID,
        "--max-amount", str(TERMINAL_MAX), "--offline-floor", str(OFFLINE_FLOOR),
        "--out", str(d / "bundle.json"),
    )
    posnet(posnet_bin, "ca", "export-transport-key", "--dir", str(deployment), "--out", str(d / "ktk.hex"))
    bundle = json.loads((d / "bundle.json").read_text())
    ktk = bytes.fromhex((d / "ktk.hex").read_text().strip())

    stderr_path = d / "host.stderr"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [posnet_bin, *host_args, "run", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=err, env=clean_env(),
        )
    try:
        line = proc.stdout.readline()
        assert line, f"host exited before listening: {stderr_path.read_text()}"
        ip, port = json.loads(line)["listening"].rsplit(":", 1)
        yield Host(proc, (ip, int(port)), bundle, ktk, d, stderr_path)
    finally:
        if proc.poll() is None:  # a failed test before the shutdown test
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()


# ---------------------------------------------------------------------------
# The terminal.


@dataclass
class Sent:
    doc: Msg
    wire: bytes = field(repr=False)  # the ISO 8583 message (MTI..64) exactly as sent
    verify_key: bytes | None = field(repr=False)


@dataclass
class Terminal:
    sock: ssl.SSLSocket
    ik: bytes = field(repr=False)
    ikid: bytes
    counter: int = 0
    stan: int = 0
    batch: int = 1
    # The terminal's own journal of approved debits in the open batch:
    # (request, response).
    journal: list = field(default_factory=list, repr=False)
    sign_on: tuple | None = field(default=None, repr=False)
    # Every 0510 received, and every (request, A0 answer), for the checks
    # of their fields.
    settlements: list = field(default_factory=list, repr=False)
    mac_failures: list = field(default_factory=list, repr=False)

    # -- DUKPT --------------------------------------------------------------
    def next_keys(self):
        self.counter = next_counter(self.counter)
        tk = transaction_key(self.ik, self.ikid, self.counter)
        keys = {
            u: working_key(tk, self.ikid, self.counter, u)
            for u in (MAC_GENERATION, MAC_VERIFICATION, PIN_ENCRYPTION)
        }
        return self.ikid + self.counter.to_bytes(4, "big"), keys

    # -- messages -----------------------------------------------------------
    def request(self, mti, txn_type, network_code=0, **fields):
        self.stan = self.stan % 999_999 + 1
        doc = Msg({
            "t": mti,
            "11": f"{self.stan:06d}",
            "41": TERMINAL_ID,
            "42": MERCHANT_ID,
            "60": f"{txn_type:02d}{self.batch:06d}{network_code:03d}",
        })
        doc.update({k.lstrip("f"): v for k, v in fields.items()})
        return doc

    def sale(self, card: Card, amount: int, pin: str | None):
        doc = self.request(
            "0200", 22, f2=card.pan, f3="000000", f4=f"{amount:012d}", f14="3012",
            f22="011" if pin else "012", f25="00", f49=CNY,
        )
        if pin is not None:
            doc["26"] = "12"
            doc["52"] = pin  # enciphered by seal()
            doc["53"] = "4700000000000000"  # format 4, AES DUKPT
        return doc

    def balance_inquiry(self, card: Card):
        return self.request(
            "0200", 1, f2=card.pan, f3="310000", f14="3012", f22="011", f25="00", f49=CNY,
            f26="12", f52=card.pin, f53="4700000000000000",
        )

    def seal(self, doc, with_mac=True) -> Sent:
        """KSN in 62, the PIN (if any) enciphered under the PIN key, MAC in 64."""
        doc = Msg(doc)
        ksn, keys = self.next_keys()
        doc["62"] = ksn.hex().upper()
        if "52" in doc:
            block = pinblock.encipher_pinblock_iso_4(keys[PIN_ENCRYPTION], doc["52"], doc["2"])
            doc["52"] = block.hex().upper()
        if not with_mac:
            raw, _ = iso8583.encode(dict(doc), CUP_SPEC)
            return Sent(doc, bytes(raw), None)
        doc["64"] = "00" * 8
        raw, _ = iso8583.encode(dict(doc), CUP_SPEC)
        raw = bytes(raw)
        assert not int.from_bytes(raw[2:10], "big") & (1 << 63), "no secondary bitmap: 64 is the last field"
        mac = mac_of(keys[MAC_GENERATION], raw[:-8])
        doc["64"] = mac.hex().upper()
        return Sent(doc, raw[:-8] + mac, keys[MAC_VERIFICATION])

    def plain(self, doc) -> Sent:
        raw, _ = iso8583.encode(dict(doc), CUP_SPEC)
        return Sent(doc, bytes(raw), None)

    # -- wire ---------------------------------------------------------------
    def send_wire(self, wire: bytes) -> bytes:
        body = TPDU + HEADER + wire
        self.sock.sendall(len(body).to_bytes(2, "big") + body)
        length = int.from_bytes(self.read_exact(2), "big")
        assert 11 < length <= MAX_FRAME, f"reply frame of {length} bytes"
        reply = self.read_exact(length)
        assert reply[:5] == TPDU_REPLY, f"TPDU addresses swapped on the reply, got {reply[:5].hex()}"
        assert reply[5:11] == HEADER, f"header carried unchanged, got {reply[5:11].hex()}"
        return reply[11:]

    def read_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            assert chunk, "host closed the connection"
            buf += chunk
        return buf

    def exchange(self, sent: Sent, expect_mac=True):
        """Sends, decodes the reply, verifies its MAC when one is expected;
        returns (decoded response, its raw bytes)."""
        raw = self.send_wire(sent.wire)
        decoded, _ = iso8583.decode(raw, CUP_SPEC)
        doc = Msg(decoded)
        assert doc["t"] == f"{int(sent.doc['t']) + 10:04d}", f"response MTI {doc['t']} to {sent.doc['t']}"
        if sent.verify_key is not None and expect_mac:
            assert "64" in doc, f"{doc['t']} {doc.get('39')}: response without MAC"
            assert not int(doc["p"], 16) & (1 << 63), "no secondary bitmap: 64 is the last field"
            assert raw[-8:] == mac_of(sent.verify_key, raw[:-8]), "response MAC verifies"
        return doc, raw

    def send(self, doc, **kw):
        return self.exchange(self.seal(doc), **kw)[0]


def balance(terminal, card: Card) -> int:
    """The card's available balance: the last 12 digits of 54 in the 0210."""
    r = terminal.send(terminal.balance_inquiry(card))
    assert r["39"] == "00", f"balance inquiry: {r['39']}"
    return int(r["54"][-12:])


def mac_of(key: bytes, scope: bytes) -> bytes:
    c = cmac.CMAC(algorithms.AES(key))
    c.update(scope)
    return c.finalize()[:8]


def assert_echoes(request: dict, response: dict, fields=("3", "4", "11", "41", "42", "49", "60")):
    for f in fields:
        if f in request:
            assert response.get(f) == request[f], f"{response['t']} field {f}: {response.get(f)!r}, request had {request[f]!r}"


def assert_0210(request, response, code):
    """The dialect's 0210: its code, 12, 13, 25, 37 and 64 present, and
    the request's 3, 4, 11, 41, 42, 49, 60 echoed."""
    assert response["t"] == "0210", f"MTI {response['t']}"
    assert response["39"] == code, f"0210: 39 = {response['39']}, expected {code}"
    assert len(response.get("12", "")) == 6 and len(response.get("13", "")) == 4, "local time and date"
    assert response.get("25") == request["25"], "condition code (25)"
    assert len(response.get("37", "")) == 12, "RRN (37) of 12 characters"
    assert "64" in response, "MAC (64)"
    assert_echoes(request, response)


def assert_approved(request, response):
    assert_0210(request, response, "00")
    assert len(response.get("38", "")) == 6, "authorization code (38) of 6 characters"


def assert_declined(request, response, code):
    assert_0210(request, response, code)
    assert "38" not in response, "a decline carries no authorization code"


def connect(host: Host) -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=host.bundle["ca_cert_pem"])
    cert, key = host.files / "terminal.crt.pem", host.files / "terminal.key.pem"
    cert.write_text(host.bundle["cert_pem"])
    key.touch(mode=0o600)
    key.write_text(host.bundle["key_pem"])
    ctx.load_cert_chain(cert, key)
    raw = socket.create_connection(host.address, timeout=IO_TIMEOUT)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def parse_tlv(data: bytes):
    """BER-TLV (X.690) into [(tag, value)]; fails on any malformed byte."""
    out, i = [], 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            while True:
                assert i < len(data), "truncated tag"
                tag = tag << 8 | data[i]
                i += 1
                if not data[i - 1] & 0x80:
                    break
        assert i < len(data), "missing length"
        length = data[i]
        i += 1
        if length & 0x80:
            n = length & 0x7F
            assert 0 < n <= 2 and i + n <= len(data), "bad long-form length"
            length = int.from_bytes(data[i : i + n], "big")
            i += n
        assert i + length <= len(data), "value past the end"
        out.append((tag, data[i : i + length]))
        i += length
    return out


@pytest.fixture(scope="module")
def dukpt_checked():
    return check_dukpt_against_vectors()


@pytest.fixture(scope="module")
def terminal(host, dukpt_checked):
    header, ik = tr31.unwrap(host.ktk, host.bundle["initial_key_block"])
    assert (header.version_id, header.key_usage, header.algorithm) == ("D", "B1", "A")
    assert len(ik) == 16, "an AES-128 initial key"
    sock = connect(host)
    assert sock.version() in ("TLSv1.2", "TLSv1.3")
    t = Terminal(sock, ik, bytes.fromhex(host.bundle["initial_key_id"]))
    # Sign-on (0800, 60.3 = 003): the KSN in 62 and the operator in 63, no MAC.
    sent = t.seal(t.request("0800", 0, 3, f63="001"), with_mac=False)
    t.sign_on = (sent.doc, t.exchange(sent)[0])
    yield t
    sock.close()


# ---------------------------------------------------------------------------
# The terminal's day.


def test_dukpt_matches_the_x9_24_3_vectors(dukpt_checked):
    # 30 transaction keys and 10 working keys: the file's every vector.
    assert dukpt_checked == 40


def test_sign_on_returns_the_terminal_parameters(terminal):
    request, response = terminal.sign_on
    assert response["t"] == "0810"
    assert response["39"] == "00"
    assert_echoes(request, response, ("11", "41", "42", "60"))
    values = {v for _, v in parse_tlv(bytes.fromhex(response["62"]))}
    for expected in (MERCHANT_NAME, CNY, str(TERMINAL_MAX), str(OFFLINE_FLOOR)):
        assert expected.encode() in values, f"parameter {expected!r} in 62"


def test_echo(terminal):
    request = terminal.request("0820", 0, 301)
    response, _ = terminal.exchange(terminal.plain(request))
    assert (response["t"], response["39"]) == ("0830", "00")
    assert_echoes(request, response, ("11", "41", "42", "60"))


def test_sale_with_pin_is_approved(terminal):
    before = balance(terminal, RICH)
    assert before == RICH.balance
    request = terminal.sale(RICH, 12_50, RICH.pin)
    response = terminal.send(request)
    assert_approved(request, response)
    terminal.journal.append((request, response))
    assert balance(terminal, RICH) == before - 12_50


def test_insufficient_funds_is_declined_51(terminal):
    request = terminal.sale(POOR, POOR.balance + 1, POOR.pin)
    assert_declined(request, terminal.send(request), "51")


def test_wrong_pin_is_declined_55(terminal):
    wrong = "9999" if RICH.pin != "9999" else "1111"
    request = terminal.sale(RICH, 100, wrong)
    assert_declined(request, terminal.send(request), "55")


def test_reversal_undoes_a_sale_and_its_repetition_gets_the_first_answer(terminal):
    before = balance(terminal, RICH)
    sale = terminal.sale(RICH, 20_00, RICH.pin)
    sale_response = terminal.send(sale)
    assert_approved(sale, sale_response)
    assert balance(terminal, RICH) == before - 20_00
    # The original's STAN, processing code, amount, entry and 60; reason 98
    # (no response); no PIN; a KSN of its own and a MAC.
    reversal = Msg({k: v for k, v in sale.items() if k not in ("t", "26", "52", "53")})
    reversal.update({"t": "0400", "39": "98"})
    sent = terminal.seal(reversal)
    first, first_raw = terminal.exchange(sent)
    assert (first["t"], first["39"]) == ("0410", "00")
    assert_echoes(reversal, first)
    again_raw = terminal.send_wire(sent.wire)
    assert again_raw == first_raw, "the same reversal bytes get the same response bytes"
    assert balance(terminal, RICH) == before, "reversed once, not twice"


def test_tampered_mac_is_answered_a0(terminal):
    before = balance(terminal, RICH)
    sent = terminal.seal(terminal.sale(RICH, 3_00, RICH.pin))
    sent.wire = sent.wire[:-1] + bytes([sent.wire[-1] ^ 0x01])
    response, _ = terminal.exchange(sent, expect_mac=False)
    assert response["39"] == "A0"
    assert_echoes(sent.doc, response, ("3", "4", "11", "41", "42", "60"))
    terminal.mac_failures.append((sent.doc, response))
    assert balance(terminal, RICH) == before, "nothing charged"
    # The terminal's action for A0: sign on again, then retry.
    sign_on = terminal.seal(terminal.request("0800", 0, 3, f63="001"), with_mac=False)
    assert terminal.exchange(sign_on)[0]["39"] == "00"
    request = {k: v for k, v in sent.doc.items() if k not in ("62", "64")}
    request["52"] = RICH.pin
    retry = terminal.seal(Msg(request))
    response = terminal.exchange(retry)[0]
    assert_approved(retry.doc, response)
    terminal.journal.append((retry.doc, response))
    assert balance(terminal, RICH) == before - 3_00, "charged once, by the retry"


def settle(terminal, totals: str):
    request = terminal.request("0500", 0, 201, f48=totals, f49=CNY, f63="001")
    response = terminal.send(request)
    assert (response["t"], response["39"]) == ("0510", "00")
    assert_echoes(request, response, ("11", "41", "42", "49", "60"))
    assert "12" in response and "13" in response, "local time and date in the 0510"
    assert response.get("48", "")[:30] == totals and len(response["48"]) == 31, \
        "48: the terminal's four totals and the result digit"
    terminal.settlements.append(response)
    return response["48"][-1]


def totals_of(journal) -> str:
    debit = sum(int(req["4"]) for req, _ in journal)
    return f"{debit:012d}{len(journal):03d}{0:012d}{0:03d}"


def test_settlement_with_the_right_totals_is_balanced(terminal):
    assert settle(terminal, totals_of(terminal.journal)) == "1", "balanced"
    terminal.journal.clear()
    terminal.batch += 1


def test_settlement_not_balanced_then_batch_upload(terminal):
    request = terminal.sale(RICH, 7_77, RICH.pin)
    response = terminal.send(request)
    assert_approved(request, response)
    terminal.journal.append((request, response))
    right = totals_of(terminal.journal)
    wrong = f"{int(right[:12]) + 1:012d}" + right[12:]
    assert settle(terminal, wrong) == "2", "not balanced"
    for sale, approval in terminal.journal:
        upload = terminal.request(
            "0320", 0, 201, f2=sale["2"], f3=sale["3"], f4=sale["4"], f22=sale["22"], f25=sale["25"],
            f37=approval["37"], f38=approval["38"], f49=CNY,
        )
        r = terminal.send(upload)
        assert (r["t"], r["39"]) == ("0330", "00"), f"batch upload: {r['39']}"
    end = terminal.request("0320", 0, 202, f49=CNY)
    r = terminal.send(end)
    assert (r["t"], r["39"]) == ("0330", "00"), f"end of upload: {r['39']}"
    terminal.journal.clear()
    terminal.batch += 1


def test_mac_failure_answer_echoes_the_request(terminal):
    assert terminal.mac_failures, "A0 answers received"
    for request, response in terminal.mac_failures:
        assert_echoes(request, response)


def test_host_stops_cleanly_on_sigterm(host, terminal):
    terminal.sock.close()
    host.proc.send_signal(signal.SIGTERM)
    try:
        code = host.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"host still running 20 s after SIGTERM: {host.stderr()}")
    assert code == 0, f"host exit status {code}: {host.stderr()}"
