//! What recording a terminal request's metrics adds to the request path:
//! reading field 39 back from the encoded response, and the counter and
//! histogram updates.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use host::metrics::{Answer, Metrics};
use iso8583::dialect::CUP;
use iso8583::{Message, Mti};
use std::hint::black_box;
use std::time::Duration;

/// A sale approval as the host sends it (fields of `flows::respond`).
fn sale_response() -> Vec<u8> {
    let mut m = Message::new(Mti::new("0210").unwrap());
    m.set(3, "000000")
        .set(11, "000017")
        .set(12, "101530")
        .set(13, "0131")
        .set(25, "00")
        .set(37, "000000000042")
        .set(38, "437343")
        .set(39, "00")
        .set(41, "T0000001")
        .set(42, "M00000000000001")
        .set(49, "156")
        .set(60, "22000001000");
    m.set_amount(1_250).unwrap();
    CUP.encode_with_mac(&m, |_| vec![0x5A; 8]).unwrap()
}

fn bench(c: &mut Criterion) {
    let wire = sale_response();
    let metrics = Metrics::new();
    c.bench_function("response code read back from a sale response", |b| {
        b.iter(|| {
            CUP.decode(black_box(&wire))
                .ok()
                .and_then(|m| m.response_code().map(Answer::code))
        })
    });
    c.bench_function("request counter and latency histogram update", |b| {
        b.iter(|| {
            metrics.request(
                black_box("sale"),
                black_box(Answer::code("00")),
                black_box(Duration::from_micros(850)),
            )
        })
    });
    c.bench_function("connection and in-flight gauge guards", |b| {
        b.iter(|| {
            let _open = metrics.connection_opened();
            let _flight = metrics.request_started();
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
