//! Published ISO 8583 byte images (tests/vectors/iso8583.toml, copied with
//! their sources named in the file).

use iso8583::dialect::ISO87ASCII;
use iso8583::{Message, Mti};

#[derive(serde::Deserialize)]
struct Vectors {
    ascii: Vec<AsciiVector>,
}

#[derive(serde::Deserialize)]
struct AsciiVector {
    text: String,
    mti: String,
    fields: std::collections::BTreeMap<String, String>,
}

fn vectors() -> Vectors {
    toml::from_str(include_str!("vectors/iso8583.toml")).expect("vector file parses")
}

#[test]
fn ascii_vectors_decode_to_their_fields() {
    let v = vectors();
    assert!(!v.ascii.is_empty());
    for vector in v.ascii {
        let m = ISO87ASCII
            .decode(vector.text.as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", vector.text));
        assert_eq!(m.mti().as_str(), vector.mti);
        let got: std::collections::BTreeMap<String, String> = m
            .fields()
            .map(|(f, v)| (f.to_string(), String::from_utf8(v.to_vec()).unwrap()))
            .collect();
        assert_eq!(got, vector.fields, "{}", vector.text);
    }
}

#[test]
fn ascii_vectors_encode_to_their_bytes() {
    for vector in vectors().ascii {
        let mut m = Message::new(Mti::new(&vector.mti).unwrap());
        for (f, v) in &vector.fields {
            m.set(f.parse().unwrap(), v);
        }
        assert_eq!(
            String::from_utf8(ISO87ASCII.encode(&m).unwrap()).unwrap(),
            vector.text
        );
    }
}
