//! Pack and unpack of a typical `cup` 0200 sale (fields 2, 3, 4, 11, 14,
//! 22, 25, 26, 35, 41, 42, 49, 52, 53, 55, 60, 64), the message every
//! card payment sends (benches/cup_sale_0200.json). The comparison with
//! other implementations is benches/side_by_side.rs (scripts/bench-iso8583).

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{Criterion, criterion_group, criterion_main};
use iso8583::dialect::CUP;
use iso8583::text::value_from_text;
use iso8583::{Message, Mti};
use std::hint::black_box;

fn sale() -> Message {
    #[derive(serde::Deserialize)]
    struct Doc {
        mti: String,
        fields: std::collections::BTreeMap<u8, String>,
    }
    let doc: Doc =
        serde_json::from_str(include_str!("cup_sale_0200.json")).expect("fixture parses");
    let mut m = Message::new(Mti::new(&doc.mti).expect("fixture MTI"));
    for (field, text) in &doc.fields {
        m.set(
            *field,
            value_from_text(&CUP, *field, text).expect("fixture value"),
        );
    }
    m
}

fn bench(c: &mut Criterion) {
    let msg = sale();
    let wire = CUP.encode(&msg).expect("fixture encodes");
    let mut group = c.benchmark_group("cup_0200_sale");
    group.bench_function("pack", |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            out.clear();
            CUP.encode_into(black_box(&msg), &mut out).unwrap();
            black_box(out.len())
        })
    });
    group.bench_function("unpack", |b| {
        b.iter(|| CUP.decode(black_box(&wire)).unwrap())
    });
    group.bench_function("pack+unpack", |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            out.clear();
            CUP.encode_into(black_box(&msg), &mut out).unwrap();
            CUP.decode(black_box(&out)).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
