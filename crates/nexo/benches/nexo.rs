//! The terminal's cost per nexo exchange: reading a payment request (plain
//! and secured: AES-256-CBC and HMAC-SHA256 of a 600-byte message, key
//! derived once), writing the payment response (plain and secured), and
//! the serial receiver's throughput.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nexo::inbound::{Security, parse_request, parse_response};
use nexo::message::ToJson;
use nexo::serial::{Config, Receiver, encode_frame};
use paycrypto::nexo::{NexoKey, encrypt, encrypt_with_nonce};

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(path),
    )
    .unwrap()
}

fn messages(c: &mut Criterion) {
    let key = NexoKey::derive("posnet bench passphrase", "posnetkey", 1).unwrap();
    let request = fixture("requests/payment.json");
    let secured = encrypt_with_nonce(&key, &request, &[3; 16]).unwrap();
    let response = parse_response(&fixture("responses/payment.json"), Security::Plain)
        .unwrap()
        .message;

    c.bench_function("read payment request (plain)", |b| {
        b.iter(|| parse_request(black_box(&request), Security::Plain).unwrap())
    });
    c.bench_function("read payment request (secured)", |b| {
        b.iter(|| parse_request(black_box(secured.as_bytes()), Security::Required(&key)).unwrap())
    });
    c.bench_function("write payment response (plain)", |b| {
        b.iter(|| black_box(&response).to_json())
    });
    c.bench_function("write payment response (secured)", |b| {
        b.iter(|| encrypt(&key, black_box(&response).to_json().as_bytes()).unwrap())
    });
}

fn serial(c: &mut Criterion) {
    let mut group = c.benchmark_group("serial receiver");
    let small = encode_frame(&fixture("requests/payment.json")).unwrap();
    let mut line = Vec::new();
    while line.len() < 64 * 1024 {
        line.extend(&small);
    }
    group.throughput(Throughput::Bytes(line.len() as u64));
    group.bench_function("64 KiB of payment-request frames", |b| {
        b.iter(|| {
            let mut rx = Receiver::new(Config::default());
            rx.handle_input(0, black_box(&line));
            std::iter::from_fn(|| rx.poll_event()).count()
        })
    });
    let big = encode_frame(&vec![b'x'; 65_535]).unwrap();
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("one 64 KiB frame", |b| {
        b.iter(|| {
            let mut rx = Receiver::new(Config::default());
            rx.handle_input(0, black_box(&big));
            rx.poll_event().unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, messages, serial);
criterion_main!(benches);
