"""An independent Sale system on a serial link, written in Python with
pyserial, against posnet's serial link (the nexo_serial example,
$NEXO_SERIAL_BIN, which serves nexo::serial_io on a device).

The two sides talk over a pseudo-terminal pair made by socat, as they would
over a USB-serial adapter or a Bluetooth RFCOMM device. Nothing on the Python
side comes from posnet: the frame (STX, 2-byte big-endian length, payload,
ETX, CRC), the CRC-16/CCITT-FALSE and the ACK/NAK rules are written below
from docs/ecr-api.md ("Serial links"), and the CRC is checked against the
catalogue's check value and the document's example before it is used.

Checked: requests answered with well-formed nexo responses; a frame with a
bad CRC is NAKed and its good copy ACKed and answered; an answer whose ACK
is withheld comes again, at most three times more; a NAK brings it again; a
frame repeated after a lost ACK is answered once; garbage and a stray STX
before a frame are skipped; an unreadable message gets a Reject.
"""

import json
import os
import shutil
import subprocess
import time

import pytest
import serial

STX, ETX, ACK, NAK = 0x02, 0x03, 0x06, 0x15
BAUD = 115200
POI_ID = "posnet-terminal-1"
SALE_ID = "PY-ECR-1"
# The stand-in's timeouts: short enough that retransmissions come quickly,
# long enough that this side always answers within them.
ACK_TIMEOUT_MS = 800
INTER_BYTE_TIMEOUT_MS = 200
MAX_RETRANSMISSIONS = 3
# Safety net for any single read; no exchange comes near it.
IO_TIMEOUT = 10


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: polynomial 0x1021, initial 0xFFFF, no reflection,
    no final XOR (docs/ecr-api.md, "Serial links")."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def frame(payload: bytes) -> bytes:
    """STX | length (2 bytes, BE) | payload | ETX | CRC over length..ETX (BE)."""
    body = len(payload).to_bytes(2, "big") + payload + bytes([ETX])
    return bytes([STX]) + body + crc16_ccitt_false(body).to_bytes(2, "big")


def test_crc_matches_the_documented_values():
    assert crc16_ccitt_false(b"123456789") == 0x29B1
    assert frame(b"{}") == bytes.fromhex("0200027B7D039AFB")


class Peer:
    """The Sale system's end of the link: writes frames and reads what the
    terminal sends, one item (ACK, NAK or a whole frame) at a time."""

    def __init__(self, port: serial.Serial):
        self.port = port

    def write(self, data: bytes):
        self.port.write(data)
        self.port.flush()

    def _read_exact(self, n: int, deadline: float) -> bytes:
        out = b""
        while len(out) < n:
            self.port.timeout = max(0.01, deadline - time.monotonic())
            chunk = self.port.read(n - len(out))
            if not chunk and time.monotonic() >= deadline:
                pytest.fail(f"the terminal sent {len(out)} of {n} expected bytes")
            out += chunk
        return out

    def next_item(self, timeout: float = IO_TIMEOUT):
        """('ACK',), ('NAK',) or ('FRAME', payload, raw bytes). Bytes
        outside a frame other than ACK and NAK are a failure: the terminal
        never sends any."""
        deadline = time.monotonic() + timeout
        first = self._read_exact(1, deadline)[0]
        if first == ACK:
            return ("ACK",)
        if first == NAK:
            return ("NAK",)
        assert first == STX, f"unexpected byte 0x{first:02X} between frames"
        length_bytes = self._read_exact(2, deadline)
        length = int.from_bytes(length_bytes, "big")
        rest = self._read_exact(length + 3, deadline)
        payload, etx, crc = rest[:length], rest[length], rest[length + 1 :]
        assert etx == ETX, "no ETX after the payload"
        assert int.from_bytes(crc, "big") == crc16_ccitt_false(length_bytes + payload + bytes([ETX])), "bad CRC from the terminal"
        return ("FRAME", payload, bytes([STX]) + length_bytes + rest)

    def expect(self, kind: str):
        item = self.next_item()
        assert item[0] == kind, f"expected {kind}, got {item[0]}"
        return item

    def exchange(self, payload: bytes) -> dict:
        """Sends a request, expects its ACK then its answer, ACKs that."""
        self.write(frame(payload))
        self.expect("ACK")
        _, answer, _ = self.expect("FRAME")
        self.write(bytes([ACK]))
        return json.loads(answer)


def header(category: str, service_id: str) -> dict:
    return {
        "ProtocolVersion": "3.0",
        "MessageClass": "Service",
        "MessageCategory": category,
        "MessageType": "Request",
        "ServiceID": service_id,
        "SaleID": SALE_ID,
        "POIID": POI_ID,
    }


def login(service_id: str) -> bytes:
    return json.dumps(
        {
            "SaleToPOIRequest": {
                "MessageHeader": header("Login", service_id),
                "LoginRequest": {
                    "DateTime": "2025-06-01T09:00:00+02:00",
                    "SaleSoftware": {
                        "ManufacturerID": "pyserial peer",
                        "ApplicationName": "interop",
                        "SoftwareVersion": "1.0",
                        "CertificationCode": "none",
                    },
                    "SaleTerminalData": {"TerminalEnvironment": "Attended", "SaleCapabilities": ["CashierDisplay"]},
                    "OperatorLanguage": "en",
                },
            }
        }
    ).encode()


def diagnosis(service_id: str) -> bytes:
    return json.dumps(
        {
            "SaleToPOIRequest": {
                "MessageHeader": header("Diagnosis", service_id),
                "DiagnosisRequest": {"HostDiagnosisFlag": False},
            }
        }
    ).encode()


def response_of(answer: dict, category: str, service_id: str) -> dict:
    """The answer's body, after checking it answers that request."""
    root = answer["SaleToPOIResponse"]
    h = root["MessageHeader"]
    assert (h["MessageCategory"], h["MessageType"], h["ServiceID"], h["SaleID"], h["POIID"]) == (
        category,
        "Response",
        service_id,
        SALE_ID,
        POI_ID,
    )
    body = root[f"{category}Response"]
    assert body["Response"]["Result"] == "Success", body["Response"]
    return body


@pytest.fixture(scope="module")
def nexo_serial_bin():
    path = os.environ.get("NEXO_SERIAL_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("NEXO_SERIAL_BIN must point at the built nexo_serial example (scripts/test sets it)")
    return path


@pytest.fixture
def peer(nexo_serial_bin, tmp_path):
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is needed for the serial tests (scripts/test installs it)")
    log = open(tmp_path / "socat.log", "w")
    pty = lambda name: f"pty,raw,echo=0,link={tmp_path / name}"
    relay = subprocess.Popen([socat, "-d", "-d", pty("a"), pty("b")], stdin=subprocess.DEVNULL, stderr=log)
    terminal = None
    port = None
    try:
        deadline = time.monotonic() + 20
        while "starting data transfer loop" not in (tmp_path / "socat.log").read_text():
            assert relay.poll() is None, f"socat exited: {(tmp_path / 'socat.log').read_text()}"
            assert time.monotonic() < deadline, "socat did not start"
            time.sleep(0.01)
        terminal = subprocess.Popen(
            [
                nexo_serial_bin,
                str(tmp_path / "b"),
                "--baud",
                str(BAUD),
                "--poi-id",
                POI_ID,
                "--ack-timeout-ms",
                str(ACK_TIMEOUT_MS),
                "--inter-byte-timeout-ms",
                str(INTER_BYTE_TIMEOUT_MS),
                "--max-retransmissions",
                str(MAX_RETRANSMISSIONS),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = terminal.stdout.readline().strip()
        assert ready == "ready", f"nexo_serial did not start: {ready!r} {terminal.stderr.read() if terminal.poll() is not None else ''}"
        port = serial.Serial(str(tmp_path / "a"), BAUD, timeout=IO_TIMEOUT, exclusive=True)
        yield Peer(port)
        assert terminal.poll() is None, f"nexo_serial exited early: {terminal.stderr.read()}"
    finally:
        if port is not None:
            port.close()
        if terminal is not None:
            terminal.terminate()
            terminal.wait(timeout=IO_TIMEOUT)
        relay.terminate()
        relay.wait(timeout=IO_TIMEOUT)
        log.close()


def test_login_diagnosis_answered(peer):
    body = response_of(peer.exchange(login("PY-0001")), "Login", "PY-0001")
    software = body["POISystemData"]["POISoftware"]
    assert software["ManufacturerID"] == "posnet"
    body = response_of(peer.exchange(diagnosis("PY-0002")), "Diagnosis", "PY-0002")
    assert body["POIStatus"]["GlobalStatus"] == "OK"
    assert body["LoggedSaleID"] == [SALE_ID]


def test_unserved_request_is_refused_not_ignored(peer):
    payment = {
        "SaleToPOIRequest": {
            "MessageHeader": header("Payment", "PY-PAY"),
            "PaymentRequest": {
                "SaleData": {"SaleTransactionID": {"TransactionID": "t-1", "TimeStamp": "2025-06-01T09:01:00+02:00"}},
                "PaymentTransaction": {"AmountsReq": {"Currency": "EUR", "RequestedAmount": 12.5}},
            },
        }
    }
    answer = peer.exchange(json.dumps(payment).encode())["SaleToPOIResponse"]
    assert answer["MessageHeader"]["ServiceID"] == "PY-PAY"
    response = answer["PaymentResponse"]["Response"]
    assert (response["Result"], response["ErrorCondition"]) == ("Failure", "NotAllowed")


def test_bad_crc_is_naked_then_the_good_frame_acked_and_answered(peer):
    good = frame(login("PY-CRC"))
    bad = good[:-2] + bytes([good[-2] ^ 0x01, good[-1]])
    peer.write(bad)
    peer.expect("NAK")
    peer.write(good)
    peer.expect("ACK")
    _, answer, _ = peer.expect("FRAME")
    peer.write(bytes([ACK]))
    response_of(json.loads(answer), "Login", "PY-CRC")


def test_withheld_ack_brings_the_answer_again(peer):
    peer.write(frame(diagnosis("PY-WITHHELD")))
    peer.expect("ACK")
    _, answer, raw = peer.expect("FRAME")
    # No ACK: after the ACK timeout the same frame comes again.
    _, again, raw_again = peer.expect("FRAME")
    assert raw_again == raw
    peer.write(bytes([ACK]))
    response_of(json.loads(again), "Diagnosis", "PY-WITHHELD")
    # Acknowledged: the next frame is the next request's answer.
    response_of(peer.exchange(diagnosis("PY-AFTER")), "Diagnosis", "PY-AFTER")


def test_nak_brings_the_answer_again(peer):
    peer.write(frame(diagnosis("PY-NAK")))
    peer.expect("ACK")
    _, _, raw = peer.expect("FRAME")
    peer.write(bytes([NAK]))
    _, again, raw_again = peer.expect("FRAME")
    assert raw_again == raw
    peer.write(bytes([ACK]))
    response_of(json.loads(again), "Diagnosis", "PY-NAK")


def test_an_unacknowledged_answer_is_sent_four_times_then_given_up(peer):
    peer.write(frame(diagnosis("PY-IGNORED")))
    peer.expect("ACK")
    copies = [peer.expect("FRAME")[2] for _ in range(1 + MAX_RETRANSMISSIONS)]
    assert len(set(copies)) == 1
    # A fifth copy would come before the next request's answer.
    response_of(peer.exchange(diagnosis("PY-NEXT")), "Diagnosis", "PY-NEXT")


def test_a_repeated_frame_is_answered_once(peer):
    request = frame(diagnosis("PY-TWICE"))
    # As after a lost ACK: the same frame again.
    peer.write(request + request)
    items = [peer.next_item() for _ in range(3)]
    assert sorted(item[0] for item in items) == ["ACK", "ACK", "FRAME"]
    answer = next(item[1] for item in items if item[0] == "FRAME")
    peer.write(bytes([ACK]))
    response_of(json.loads(answer), "Diagnosis", "PY-TWICE")
    response_of(peer.exchange(diagnosis("PY-ONCE")), "Diagnosis", "PY-ONCE")


def test_garbage_and_a_stray_stx_before_a_frame_are_skipped(peer):
    # The stray STX announces 65535 bytes and swallows the frame after it;
    # after the inter-byte timeout the terminal scans those bytes again and
    # finds the frame.
    peer.write(b"\x00\xffAT\r\n\x02\xff\xff" + frame(login("PY-GARBAGE")))
    peer.expect("ACK")
    _, answer, _ = peer.expect("FRAME")
    peer.write(bytes([ACK]))
    response_of(json.loads(answer), "Login", "PY-GARBAGE")


def test_an_unreadable_message_is_rejected(peer):
    peer.write(frame(b'{"SaleToPOIRequest": {"MessageHeader": '))
    peer.expect("ACK")
    _, answer, _ = peer.expect("FRAME")
    peer.write(bytes([ACK]))
    root = json.loads(answer)["SaleToPOIRequest"]
    assert root["MessageHeader"]["MessageCategory"] == "Event"
    assert root["EventNotification"]["EventToNotify"] == "Reject"
