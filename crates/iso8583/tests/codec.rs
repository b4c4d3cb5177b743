//! Field types and encodings, one by one, and every decode error with its
//! element and offset.

use iso8583::dialect::{CUP, ISO87ASCII};
use iso8583::spec::{
    Align, BitmapEncoding, Content, Dialect, Encoding, FieldSpec, Length, MtiEncoding,
    PrefixEncoding,
};
use iso8583::{DecodeErrorKind, Element, EncodeErrorKind, Message, Mti};

fn hex(s: &str) -> Vec<u8> {
    iso8583::text::parse_hex(&s.replace(' ', "")).expect("test hex")
}

fn msg(mti: &str, fields: &[(u8, &[u8])]) -> Message {
    let mut m = Message::new(Mti::new(mti).unwrap());
    for (f, v) in fields {
        m.set(*f, v);
    }
    m
}

/// A dialect exercising the encodings the shipped ones do not use:
/// EBCDIC MTI and text, binary and EBCDIC length prefixes, right-aligned F pad.
static TEST: Dialect = Dialect {
    name: "test",
    description: "encodings not in the shipped dialects",
    mti: MtiEncoding::Ebcdic,
    bitmap: BitmapEncoding::Binary,
    fields: Dialect::table(&[
        (
            2,
            FieldSpec {
                name: "pan",
                content: Content::N,
                length: Length::llvar(19),
                encoding: Encoding::Bcd {
                    align: Align::Right,
                    pad: 0xF,
                },
                prefix: PrefixEncoding::Binary,
            },
        ),
        (
            43,
            FieldSpec {
                name: "name",
                content: Content::Ans,
                length: Length::lllvar(40),
                encoding: Encoding::Ebcdic,
                prefix: PrefixEncoding::Ebcdic,
            },
        ),
        (
            48,
            FieldSpec {
                name: "data",
                content: Content::B,
                length: Length::lllvar(300),
                encoding: Encoding::Binary,
                prefix: PrefixEncoding::Binary,
            },
        ),
        (
            70,
            FieldSpec {
                name: "nmic",
                content: Content::N,
                length: Length::Fixed(3),
                encoding: Encoding::Ascii,
                prefix: PrefixEncoding::Ascii,
            },
        ),
    ]),
};

#[test]
fn cup_numeric_fields_are_packed_bcd() {
    let m = msg(
        "0200",
        &[(3, b"000000"), (4, b"000000001234"), (11, b"000017")],
    );
    let wire = CUP.encode(&m).unwrap();
    assert_eq!(
        wire,
        hex("0200 3020000000000000 000000 000000001234 000017")
    );
    assert_eq!(CUP.decode(&wire).unwrap(), m);
}

#[test]
fn cup_odd_lengths_follow_each_fields_alignment() {
    // 2: LLVAR left-aligned (pad right), 22: left-aligned, 23: right-aligned.
    let m = msg("0200", &[(2, b"4111111111111"), (22, b"051"), (23, b"001")]);
    let wire = CUP.encode(&m).unwrap();
    assert_eq!(
        wire,
        hex("0200 4000060000000000 13 4111111111111 0 0510 0001")
    );
    assert_eq!(CUP.decode(&wire).unwrap(), m);
}

#[test]
fn cup_track2_separator_is_nibble_d() {
    let m = msg("0200", &[(35, b"4111111111111111=2512101")]);
    let wire = CUP.encode(&m).unwrap();
    assert_eq!(
        wire,
        hex("0200 0000000020000000 24 4111111111111111D2512101")
    );
    assert_eq!(CUP.decode(&wire).unwrap(), m);
}

#[test]
fn cup_text_fields_are_ascii_and_lllvar_prefix_is_two_bcd_bytes() {
    let m = msg("0210", &[(39, b"00"), (41, b"T0000001"), (63, b"CUP")]);
    let wire = CUP.encode(&m).unwrap();
    let mut expected = hex("0210 0000000002800002");
    expected.extend_from_slice(b"00T0000001");
    expected.extend_from_slice(&hex("0003"));
    expected.extend_from_slice(b"CUP");
    assert_eq!(wire, expected);
    assert_eq!(CUP.decode(&wire).unwrap(), m);
}

#[test]
fn binary_fields_are_raw_in_cup_and_hex_text_in_ascii() {
    let pin = hex("0123456789ABCDEF");
    let m = msg("0200", &[(52, &pin)]);
    assert_eq!(
        CUP.encode(&m).unwrap(),
        hex("0200 0000000000001000 08 0123456789ABCDEF")
    );
    assert_eq!(
        ISO87ASCII.encode(&m).unwrap(),
        b"020000000000000010000123456789ABCDEF".to_vec()
    );
    // ICC data: LLL counts hex characters in the ASCII dialect.
    let m = msg("0200", &[(55, &hex("9F0206000000001000"))]);
    assert_eq!(
        ISO87ASCII.encode(&m).unwrap(),
        b"02000000000000000200018"
            .iter()
            .chain(b"9F0206000000001000")
            .copied()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        ISO87ASCII.decode(&ISO87ASCII.encode(&m).unwrap()).unwrap(),
        m
    );
}

#[test]
fn secondary_bitmap_when_a_field_over_64_is_present() {
    let m = msg("0800", &[(11, b"000001"), (70, b"001")]);
    let wire = ISO87ASCII.encode(&m).unwrap();
    assert_eq!(
        wire,
        b"08008020000000000000040000000000000000000100 1"
            .iter()
            .filter(|b| **b != b' ')
            .copied()
            .collect::<Vec<_>>()
    );
    assert_eq!(ISO87ASCII.decode(&wire).unwrap(), m);
    assert!(
        m.bitmap() >> 127 == 1,
        "bit 1 announces the secondary bitmap"
    );
}

#[test]
fn ebcdic_binary_prefix_and_right_aligned_f_pad() {
    let m = msg(
        "0100",
        &[
            (2, b"12345"),
            (43, b"SHOP 1"),
            (48, &[0xAA; 260]),
            (70, b"301"),
        ],
    );
    let wire = TEST.encode(&m).unwrap();
    assert_eq!(&wire[..4], &[0xF0, 0xF1, 0xF0, 0xF0], "EBCDIC MTI");
    assert_eq!(
        &wire[20..24],
        &hex("05 F1 23 45"),
        "binary LL prefix, F pad on the left"
    );
    assert_eq!(
        &wire[24..33],
        &hex("F0F0F6 E2C8D6D740F1"),
        "EBCDIC prefix and text"
    );
    assert_eq!(TEST.decode(&wire).unwrap(), m);
}

#[test]
fn mac_scope_is_the_bytes_before_the_mac_field() {
    let m = msg("0200", &[(3, b"000000"), (11, b"000001")]);
    let mut seen = Vec::new();
    let wire = CUP
        .encode_with_mac(&m, |scope| {
            seen = scope.to_vec();
            [0x11u8; 8]
        })
        .unwrap();
    assert_eq!(&wire[..seen.len()], &seen[..]);
    assert_eq!(&wire[seen.len()..], &[0x11; 8]);
    let (decoded, scope) = CUP.decode_with_mac_scope(&wire).unwrap();
    assert_eq!(scope, Some(&seen[..]));
    assert_eq!(decoded.get(64), Some(&[0x11u8; 8][..]));
    // A secondary field moves the MAC to 128.
    let m = msg("0200", &[(3, b"000000"), (90, &[b'0'; 42])]);
    let wire = CUP.encode_with_mac(&m, |_| [0x22u8; 8]).unwrap();
    let (decoded, scope) = CUP.decode_with_mac_scope(&wire).unwrap();
    assert_eq!(decoded.get(128), Some(&[0x22u8; 8][..]));
    assert_eq!(scope.unwrap().len(), wire.len() - 8);
    // Wrong MAC size is refused.
    let err = CUP.encode_with_mac(&m, |_| [0u8; 4]).unwrap_err();
    assert_eq!(
        err.kind,
        EncodeErrorKind::MacSize {
            length: 4,
            expected: 8
        }
    );
}

fn decode_err(d: &Dialect, wire: &[u8]) -> (Element, usize, DecodeErrorKind) {
    let e = d.decode(wire).unwrap_err();
    (e.element, e.offset, e.kind)
}

#[test]
fn decode_errors_name_element_offset_and_reason() {
    use DecodeErrorKind::*;
    assert_eq!(
        decode_err(&CUP, &hex("02")),
        (
            Element::Mti,
            0,
            Truncated {
                needed: 2,
                available: 1
            }
        )
    );
    assert_eq!(
        decode_err(&CUP, &hex("0A00")),
        (Element::Mti, 0, BadBcdNibble { nibble: 0xA })
    );
    assert_eq!(
        decode_err(&ISO87ASCII, b"02X0"),
        (Element::Mti, 2, NonDigit { byte: b'X' })
    );
    assert_eq!(
        decode_err(&CUP, &hex("0200 20")),
        (
            Element::PrimaryBitmap,
            2,
            Truncated {
                needed: 8,
                available: 1
            }
        )
    );
    assert_eq!(
        decode_err(&ISO87ASCII, b"0200G000000000000000"),
        (Element::PrimaryBitmap, 4, NotHex { byte: b'G' })
    );
    // Field 2 LLVAR declares 25 digits, max 19.
    assert_eq!(
        decode_err(&CUP, &hex("0200 4000000000000000 25")),
        (
            Element::Field(2),
            10,
            LengthOverMax {
                length: 25,
                max: 19,
                units: "digits"
            }
        )
    );
    assert_eq!(
        decode_err(&CUP, &hex("0200 4000000000000000 1A")),
        (Element::Field(2), 10, BadLengthPrefix)
    );
    assert_eq!(
        decode_err(&CUP, &hex("0200 2000000000000000 00001A")),
        (Element::Field(3), 12, BadBcdNibble { nibble: 0xA })
    );
    assert_eq!(
        decode_err(&CUP, &hex("0200 2000000000000000 0000")),
        (
            Element::Field(3),
            10,
            Truncated {
                needed: 3,
                available: 2
            }
        )
    );
    // Odd PAN with a non-zero filler nibble.
    assert_eq!(
        decode_err(&CUP, &hex("0200 4000000000000000 03 1237")),
        (
            Element::Field(2),
            12,
            BadPad {
                found: 7,
                expected: 0
            }
        )
    );
    assert_eq!(
        decode_err(&CUP, &hex("0200 2000000000000000 000000 FF")),
        (Element::Message, 13, TrailingBytes { count: 1 })
    );
    // Bit 5 (amount, settlement) is not in the cup table.
    assert_eq!(
        decode_err(&CUP, &hex("0200 0800000000000000")),
        (Element::Field(5), 10, UndefinedField { field: 5 })
    );
    assert_eq!(
        decode_err(
            &ISO87ASCII,
            b"02002000000000000000 00A000"
                .iter()
                .filter(|b| **b != b' ')
                .copied()
                .collect::<Vec<_>>()
                .as_slice()
        ),
        (Element::Field(3), 22, NonDigit { byte: b'A' })
    );
    assert_eq!(
        decode_err(
            &CUP,
            &hex("0200 0000000000800000")
                .iter()
                .copied()
                .chain(*b"T\x01000001")
                .collect::<Vec<_>>()
        ),
        (
            Element::Field(41),
            11,
            InvalidChar {
                byte: 1,
                content: "ans"
            }
        )
    );
    let odd_icc = b"020000000000000002000019".to_vec();
    assert_eq!(
        decode_err(&ISO87ASCII, &odd_icc),
        (Element::Field(55), 23, OddHexLength { length: 1 })
    );
}

#[test]
fn encode_checks_the_same_rules() {
    let fails = |m: &Message| CUP.encode(m).unwrap_err();
    let e = fails(&msg("0200", &[(3, b"00000")]));
    assert_eq!(
        (e.element, e.kind),
        (
            Element::Field(3),
            EncodeErrorKind::WrongLength {
                length: 5,
                expected: 6,
                units: "digits"
            }
        )
    );
    let e = fails(&msg("0200", &[(2, &[b'4'; 20])]));
    assert_eq!(
        e.kind,
        EncodeErrorKind::TooLong {
            length: 20,
            max: 19,
            units: "digits"
        }
    );
    let e = fails(&msg("0200", &[(4, b"00000000012X")]));
    assert_eq!(
        e.kind,
        EncodeErrorKind::InvalidChar {
            index: 11,
            byte: b'X',
            content: "n"
        }
    );
    let e = fails(&msg("0200", &[(5, b"000000000000")]));
    assert_eq!(
        (e.element, e.kind),
        (Element::Field(5), EncodeErrorKind::UndefinedField)
    );
    let e = fails(&msg("0200", &[(39, b"0\n")]));
    assert_eq!(
        e.kind,
        EncodeErrorKind::InvalidChar {
            index: 1,
            byte: b'\n',
            content: "an"
        }
    );
}

#[test]
fn typed_accessors() {
    let mut m = Message::new(Mti::new("0200").unwrap());
    m.set_amount(123_456).unwrap().set_stan(42).unwrap();
    m.set(39, "00")
        .set(41, "T0000001")
        .set(42, "M00000000000001")
        .set(37, "000000000001");
    assert_eq!(m.get(4), Some(&b"000000123456"[..]));
    assert_eq!(m.amount(), Some(Ok(123_456)));
    assert_eq!(m.stan(), Some(Ok(42)));
    assert_eq!(m.response_code(), Some("00"));
    assert_eq!(m.terminal_id(), Some("T0000001"));
    assert_eq!(m.merchant_id(), Some("M00000000000001"));
    assert_eq!(m.rrn(), Some("000000000001"));
    assert!(m.set_stan(1_000_000).is_err());
    assert_eq!(m.mti().response().unwrap().as_str(), "0210");
    assert_eq!(
        Mti::new("0400").unwrap().response().unwrap().as_str(),
        "0410"
    );
    assert_eq!(Mti::new("0210").unwrap().response(), None);
    assert!(Mti::new("02a0").is_err());
}

#[test]
fn overwriting_values_keeps_the_buffer_bounded() {
    let mut m = Message::new(Mti::new("0200").unwrap());
    for i in 0..10_000u32 {
        m.set(48, format!("{i:0300}"));
    }
    assert_eq!(m.get(48).unwrap().len(), 300);
    let debug = format!("{m:?}");
    assert!(
        !debug.contains("0000"),
        "Debug must not show values: {debug}"
    );
}

#[test]
fn shipped_dialects_are_consistent() {
    for d in iso8583::dialect::ALL {
        for (n, spec) in d
            .fields
            .iter()
            .enumerate()
            .filter_map(|(n, s)| s.map(|s| (n, s)))
        {
            let ok = match spec.encoding {
                Encoding::Bcd { pad, .. } => {
                    matches!(spec.content, Content::N | Content::Z) && pad <= 0xF
                }
                Encoding::Ascii | Encoding::Ebcdic => spec.content != Content::B,
                Encoding::Binary | Encoding::HexAscii => spec.content == Content::B,
            };
            assert!(
                ok,
                "{} field {n}: content {:?} cannot use {:?}",
                d.name, spec.content, spec.encoding
            );
            if let Length::Var { digits, max } = spec.length {
                assert!(
                    u32::from(max) < 10u32.pow(u32::from(digits)),
                    "{} field {n}: max does not fit its prefix",
                    d.name
                );
            }
        }
    }
}

#[test]
fn a_mac_that_cannot_be_computed_is_an_error_not_a_message() {
    let m = msg("0200", &[(3, b"000000")]);
    let err = CUP
        .try_encode_with_mac(&m, |_| Err::<[u8; 8], _>("wrong key algorithm"))
        .unwrap_err();
    assert_eq!(err, iso8583::MacEncodeError::Mac("wrong key algorithm"));
    let ok = CUP
        .try_encode_with_mac(&m, |_| Ok::<_, ()>([9u8; 8]))
        .unwrap();
    assert_eq!(ok, CUP.encode_with_mac(&m, |_| [9u8; 8]).unwrap());
    let short = CUP
        .try_encode_with_mac(&m, |_| Ok::<_, ()>([9u8; 4]))
        .unwrap_err();
    assert!(
        matches!(short, iso8583::MacEncodeError::Encode(e) if e.kind == EncodeErrorKind::MacSize { length: 4, expected: 8 })
    );
}
