//! Property tests: random valid messages survive encode → decode in both
//! dialects, and no input, random or mutated, makes the decoder panic.

use iso8583::dialect::{ALL, CUP, ISO87ASCII};
use iso8583::spec::{Content, Dialect, Encoding, FieldSpec, Length};
use iso8583::{FrameLayout, Message, Mti, tlv};
use proptest::prelude::*;

fn value_for(spec: &FieldSpec) -> BoxedStrategy<Vec<u8>> {
    let (min, max) = match spec.length {
        Length::Fixed(n) => (n as usize, n as usize),
        Length::Var { max, .. } => (0, max as usize),
    };
    let hex_text = spec.encoding == Encoding::HexAscii;
    let (min, max) = if hex_text {
        (min / 2, max / 2)
    } else {
        (min, max)
    };
    let chars: Vec<u8> = match spec.content {
        Content::N => (b'0'..=b'9').collect(),
        Content::Z => (b'0'..=b'9').chain([b'=']).collect(),
        Content::An => (b'0'..=b'9')
            .chain(b'A'..=b'Z')
            .chain(b'a'..=b'z')
            .collect(),
        Content::Ans => (0x20..=0x7E).collect(),
        Content::B => return proptest::collection::vec(any::<u8>(), min..=max).boxed(),
    };
    proptest::collection::vec(proptest::sample::select(chars), min..=max).boxed()
}

fn message(dialect: &'static Dialect) -> impl Strategy<Value = Message> {
    let defined: Vec<u8> = (2..=128u8)
        .filter(|f| dialect.field(*f).is_some())
        .collect();
    let mti = (0u8..=9, 1u8..=8, 0u8..=5, 0u8..=5).prop_map(|(v, c, f, o)| {
        Mti::from_digits([b'0' + v, b'0' + c, b'0' + f, b'0' + o]).unwrap()
    });
    (
        mti,
        proptest::sample::subsequence(defined.clone(), 0..=defined.len().min(24)),
    )
        .prop_flat_map(move |(mti, fields)| {
            let values: Vec<_> = fields
                .iter()
                .map(|f| value_for(dialect.field(*f).unwrap()))
                .collect();
            (Just(mti), Just(fields), values)
        })
        .prop_map(|(mti, fields, values)| {
            let mut m = Message::new(mti);
            for (f, v) in fields.into_iter().zip(values) {
                m.set(f, v);
            }
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn cup_round_trip(m in message(&CUP)) {
        let wire = CUP.encode(&m).unwrap();
        prop_assert_eq!(CUP.decode(&wire).unwrap(), m);
    }

    #[test]
    fn iso87ascii_round_trip(m in message(&ISO87ASCII)) {
        let wire = ISO87ASCII.encode(&m).unwrap();
        prop_assert!(wire.iter().all(u8::is_ascii));
        prop_assert_eq!(ISO87ASCII.decode(&wire).unwrap(), m);
    }

    #[test]
    fn mac_scope_round_trip(m in message(&CUP)) {
        let mut m = m;
        m.remove(64);
        m.remove(128);
        let mut scope = Vec::new();
        let wire = CUP.encode_with_mac(&m, |s| { scope = s.to_vec(); [7u8; 8] }).unwrap();
        let (_, seen) = CUP.decode_with_mac_scope(&wire).unwrap();
        prop_assert_eq!(seen, Some(&scope[..]));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for d in ALL {
            let _ = d.decode(&bytes);
        }
        let _ = FrameLayout::CUP.check(&bytes);
        let _ = tlv::find(&bytes, 0x9F02);
        let _ = tlv::iter(&bytes).count();
    }

    #[test]
    fn mutated_messages_never_panic(
        m in message(&CUP),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        for d in [&CUP, &ISO87ASCII] {
            let Ok(mut wire) = d.encode(&m) else { continue };
            for (i, b) in &edits {
                let at = i.index(wire.len());
                wire[at] = *b;
            }
            if let Ok(decoded) = d.decode(&wire) {
                // Whatever decodes must encode, and decode again to the same message
                // (hex text may come back in upper case).
                let again = d.encode(&decoded).unwrap();
                prop_assert_eq!(d.decode(&again).unwrap(), decoded);
            }
            let _ = d.decode(&wire[..cut.index(wire.len() + 1)]);
        }
    }

    #[test]
    fn tlv_round_trip(objects in proptest::collection::vec((0x01u32..0xFFFF, proptest::collection::vec(any::<u8>(), 0..300)), 0..6)) {
        let mut data = Vec::new();
        let mut expected = Vec::new();
        for (tag, value) in &objects {
            // Normalise to a valid primitive tag: one byte, or two with 0x1F in the first.
            let tag = if *tag > 0xFF { 0x9F00 | (tag & 0x7F) } else { tag & 0xDF & !0x1F | 0x01 };
            tlv::write(tag, value, &mut data);
            expected.push((tag, value.clone()));
        }
        let parsed: Vec<_> = tlv::iter(&data).map(|t| t.map(|t| (t.tag, t.value.to_vec()))).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(parsed, expected);
    }
}
