//! posnet's codec next to the `iso8583_rs` crate (0.1.10), packing and
//! unpacking the same 0200 sale (benches/side_by_side_0200.json: the sale
//! of cup_sale_0200.json with an 8-byte PIN block, which both dialects carry).
//! `scripts/bench-iso8583` runs this and the same message through
//! pyiso8583, and prints the three side by side.
//!
//! iso8583_rs cannot write either posnet dialect: its numeric BCD fields
//! take an even number of hexadecimal digits with no padding rule and its
//! length prefixes count bytes (so not `cup`), and it writes bitmaps only as
//! raw bytes (so not `iso87ascii`). It gets the closest layout it can
//! express, benches/iso8583_rs_spec.yaml: `iso87ascii` with binary bitmaps.
//! posnet packs that same layout (a dialect is a table, so it is the
//! `iso87ascii` table with [`BitmapEncoding::Binary`]), and the two must
//! produce identical bytes. posnet's own `cup` and `iso87ascii` are timed too.
//!
//! Every implementation is checked once before timing: its bytes equal the
//! expected wire bytes (benches/side_by_side_0200_wire.json, which pyiso8583's bench
//! checks too) and unpack back to the fixture's field values.
//!
//! iso8583_rs reads its spec once per process from the file named by the
//! `SPEC_FILE` environment variable; when that is not ours, the bench runs
//! itself again with it set (the crate forbids the unsafe `set_var`).

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{Criterion, criterion_group};
use iso8583::dialect::{CUP, ISO87ASCII};
use iso8583::spec::{BitmapEncoding, Dialect};
use iso8583::text::{value_from_text, value_to_text};
use iso8583::{Message, Mti};
use iso8583_rs::iso8583::iso_spec::{IsoMsg, Spec, new_msg, spec};
use std::collections::BTreeMap;
use std::hint::black_box;

const SPEC_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/iso8583_rs_spec.yaml");

#[derive(serde::Deserialize)]
struct Sale {
    mti: String,
    fields: BTreeMap<u8, String>,
}

fn sale() -> Sale {
    serde_json::from_str(include_str!("side_by_side_0200.json")).expect("fixture parses")
}

/// The expected wire bytes of the sale in each layout, as hexadecimal.
fn expected_wire(layout: &str) -> Vec<u8> {
    let wire: BTreeMap<String, String> =
        serde_json::from_str(include_str!("side_by_side_0200_wire.json"))
            .expect("wire fixture parses");
    hex::decode(&wire[layout]).expect("wire fixture is hexadecimal")
}

fn posnet_message(dialect: &Dialect, sale: &Sale) -> Message {
    let mut m = Message::new(Mti::new(&sale.mti).expect("fixture MTI"));
    for (field, text) in &sale.fields {
        m.set(
            *field,
            value_from_text(dialect, *field, text).expect("fixture value"),
        );
    }
    m
}

fn iso8583_rs_message(spec: &'static Spec, sale: &Sale) -> IsoMsg {
    let segment = spec
        .get_message_from_header(&sale.mti)
        .expect("spec has the 0200 message");
    let mut m = new_msg(spec, segment);
    m.set("message_type", &sale.mti).expect("MTI");
    for (field, text) in &sale.fields {
        m.set_on(u32::from(*field), text).expect("field in spec");
    }
    m
}

/// The fields (number, text) iso8583_rs unpacked, for comparison with the fixture.
fn iso8583_rs_fields(m: &IsoMsg) -> BTreeMap<u8, String> {
    (2..=128u8)
        .filter(|&f| m.bmp.is_on(u32::from(f)))
        .map(|f| {
            let text = m.bmp_child_value(u32::from(f)).expect("field unpacked");
            (f, text)
        })
        .collect()
}

/// posnet's check: the bytes are the expected ones and unpack to the
/// fixture. Returns the bytes.
fn check_posnet(dialect: &Dialect, layout: &str, sale: &Sale, msg: &Message) -> Vec<u8> {
    let wire = dialect.encode(msg).expect("fixture encodes");
    assert_eq!(
        hex::encode_upper(&wire),
        hex::encode_upper(expected_wire(layout)),
        "posnet {layout}: packed bytes differ from benches/side_by_side_0200_wire.json"
    );
    let back = dialect.decode(&wire).expect("own bytes decode");
    assert_eq!(back.mti().to_string(), sale.mti);
    let fields: BTreeMap<u8, String> = back
        .fields()
        .map(|(f, v)| (f, value_to_text(dialect, f, v).expect("field defined")))
        .collect();
    assert_eq!(
        fields, sale.fields,
        "posnet {layout}: unpacked values differ"
    );
    wire
}

fn bench(c: &mut Criterion) {
    let sale = sale();
    let iso87_binary_bitmap = Dialect {
        name: "iso87ascii-binary-bitmap",
        description: "iso87ascii with raw-byte bitmaps (what iso8583_rs can write)",
        bitmap: BitmapEncoding::Binary,
        ..ISO87ASCII
    };
    let layouts: [(&str, &Dialect); 3] = [
        ("cup", &CUP),
        ("iso87ascii", &ISO87ASCII),
        ("iso87ascii_binary_bitmap", &iso87_binary_bitmap),
    ];

    let posnet: Vec<(&str, &Dialect, Message, Vec<u8>)> = layouts
        .into_iter()
        .map(|(layout, dialect)| {
            let msg = posnet_message(dialect, &sale);
            let wire = check_posnet(dialect, layout, &sale, &msg);
            (layout, dialect, msg, wire)
        })
        .collect();

    // iso8583_rs writes one layout, the last: its bytes must be posnet's.
    let (rs_layout, _, _, posnet_wire) = &posnet[2];
    let rs_spec = spec("iso87ascii-binary-bitmap");
    let rs_msg = iso8583_rs_message(rs_spec, &sale);
    let mut rs_wire = rs_msg.assemble().expect("iso8583_rs assembles the sale");
    assert_eq!(
        hex::encode_upper(&rs_wire),
        hex::encode_upper(posnet_wire),
        "iso8583_rs: packed bytes differ from posnet's for the same layout"
    );
    let rs_back = rs_spec
        .parse(&mut rs_wire)
        .expect("iso8583_rs parses its bytes");
    assert_eq!(
        rs_back
            .get_field_value(&"message_type".to_string())
            .expect("MTI"),
        sale.mti
    );
    assert_eq!(
        iso8583_rs_fields(&rs_back),
        sale.fields,
        "iso8583_rs: unpacked values differ"
    );

    let mut group = c.benchmark_group("iso8583_side_by_side");
    for (layout, dialect, msg, wire) in &posnet {
        // A new buffer per pack, as iso8583_rs and pyiso8583 return one.
        group.bench_function(format!("{layout}/posnet/pack"), |b| {
            b.iter(|| dialect.encode(black_box(msg)).unwrap())
        });
        group.bench_function(format!("{layout}/posnet/unpack"), |b| {
            b.iter(|| dialect.decode(black_box(wire)).unwrap())
        });
        group.bench_function(format!("{layout}/posnet/pack+unpack"), |b| {
            b.iter(|| {
                let wire = dialect.encode(black_box(msg)).unwrap();
                dialect.decode(black_box(&wire)).unwrap()
            })
        });
    }
    let layout = rs_layout;
    group.bench_function(format!("{layout}/iso8583_rs/pack"), |b| {
        b.iter(|| black_box(&rs_msg).assemble().unwrap())
    });
    group.bench_function(format!("{layout}/iso8583_rs/unpack"), |b| {
        b.iter(|| rs_spec.parse(black_box(&mut rs_wire)).unwrap())
    });
    group.bench_function(format!("{layout}/iso8583_rs/pack+unpack"), |b| {
        b.iter(|| {
            let mut wire = black_box(&rs_msg).assemble().unwrap();
            rs_spec.parse(black_box(&mut wire)).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);

/// Runs the benches with iso8583_rs's `SPEC_FILE` pointing at our spec,
/// starting this binary again with it when it is not.
fn main() {
    if std::env::var_os("SPEC_FILE").is_some_and(|v| v == SPEC_FILE) {
        benches();
        Criterion::default().configure_from_args().final_summary();
        return;
    }
    let exe = std::env::current_exe().expect("bench executable path");
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("SPEC_FILE", SPEC_FILE)
        .status()
        .expect("bench runs again with SPEC_FILE");
    std::process::exit(status.code().unwrap_or(1));
}
