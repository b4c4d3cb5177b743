//! `posnet iso8583` as an engineer uses it: decode with masking, encode,
//! errors on stderr with field and offset, and the dialect reference in
//! docs/ matching the code.

use std::process::{Command, Output};

fn posnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_posnet"))
        .args(args)
        .output()
        .expect("posnet runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn decode_masks_card_data_unless_asked() {
    let hex = posnet(&[
        "iso8583",
        "encode",
        "--dialect",
        "cup",
        r#"{"mti":"0200","fields":{"2":"4111111111111111","4":"000000001000","35":"4111111111111111=2512101","52":"0011223344556677"}}"#,
    ]);
    assert!(
        hex.status.success(),
        "{}",
        String::from_utf8_lossy(&hex.stderr)
    );
    let hex = stdout(&hex);
    let masked = posnet(&["iso8583", "decode", "--dialect", "cup", hex.trim()]);
    assert_eq!(
        stdout(&masked).trim(),
        r#"{"mti":"0200","fields":{"2":"411111******1111","4":"000000001000","35":"411111******1111********","52":"****************"}}"#
    );
    let full = posnet(&[
        "iso8583",
        "decode",
        "--dialect",
        "cup",
        "--show-pan",
        hex.trim(),
    ]);
    assert!(stdout(&full).contains(r#""2":"4111111111111111""#));
    assert!(stdout(&full).contains(r#""52":"0011223344556677""#));
}

#[test]
fn errors_name_field_and_offset_and_exit_1() {
    let out = posnet(&[
        "iso8583",
        "decode",
        "--dialect",
        "cup",
        "020020000000000000000000",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("field 3 at offset 10") && err.contains("truncated"),
        "{err}"
    );
    let out = posnet(&[
        "iso8583",
        "encode",
        "--dialect",
        "cup",
        r#"{"mti":"0200","fields":{"4":"12"}}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("field 4: length 2 digits, the field is fixed at 12")
    );
    let out = posnet(&[
        "iso8583",
        "encode",
        "--dialect",
        "cup",
        r#"{"mti":"0200","fields":{"1":"00"}}"#,
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a number in 2..=128"));
}

#[test]
fn dialect_reference_matches_the_code() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/iso8583-dialect.md"
    ))
    .unwrap();
    let table = stdout(&posnet(&["iso8583", "fields", "--dialect", "cup"]));
    assert!(
        doc.contains(table.trim()),
        "docs/iso8583-dialect.md: regenerate the field table with `posnet iso8583 fields --dialect cup`"
    );
}
