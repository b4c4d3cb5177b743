//! PIN blocks, MACs, TR-31 key blocks, key check values and nexo message
//! security against the published vectors in `tests/vectors/`.

mod common;

use common::{arr, h, s, upper, vectors};
use paycrypto::keys::{key_check_value, key_check_value_aes_ecb};
use paycrypto::mac::{self, Algorithm, MacError, Padding};
use paycrypto::nexo::{self, NexoError, NexoKey};
use paycrypto::pinblock::{self, Format, Pan, Pin, PinBlockError};
use paycrypto::tr31::{self, Header, Tr31Error, Version};
use paycrypto::{Kbpk, KeyAlgorithm, MacKey, PinKey};

#[test]
fn pinblock_format0_encode_decode() {
    let t = toml::Value::Table(vectors("pinblock.toml"));
    for v in arr(&t, "format0") {
        let pin = Pin::new(s(v, "pin")).unwrap();
        let pan = Pan::new(s(v, "pan")).unwrap();
        let block = pinblock::encode(Format::Iso0, &pin, Some(&pan)).unwrap();
        assert_eq!(upper(block.expose_secret()), s(v, "clear_block"));
        assert_eq!(
            pinblock::decode(Format::Iso0, &h(v, "clear_block"), Some(&pan)).unwrap(),
            pin
        );
    }
}

#[test]
fn pinblock_format3_decode_and_fill_rule() {
    let t = toml::Value::Table(vectors("pinblock.toml"));
    for v in arr(&t, "format3") {
        let pan = Pan::new(s(v, "pan")).unwrap();
        let block = h(v, "clear_block");
        let pin = pinblock::decode(Format::Iso3, &block, Some(&pan)).unwrap();
        assert_eq!(pin.expose_secret(), s(v, "pin"));
        // The same block read as format 0 breaks the F-fill rule or control field.
        assert!(pinblock::decode(Format::Iso0, &block, Some(&pan)).is_err());
        // Format 3 fill is A..F only, whatever the random source gives.
        for _ in 0..50 {
            let b = pinblock::encode(Format::Iso3, &pin, Some(&pan)).unwrap();
            assert_eq!(
                pinblock::decode(Format::Iso3, b.expose_secret(), Some(&pan)).unwrap(),
                pin
            );
        }
    }
}

#[test]
fn pinblock_format4_psec_vector() {
    let t = toml::Value::Table(vectors("pinblock.toml"));
    for v in arr(&t, "format4") {
        let key = PinKey::new(KeyAlgorithm::Aes128, &h(v, "key")).unwrap();
        let pin = Pin::new(s(v, "pin")).unwrap();
        let pan = Pan::new(s(v, "pan")).unwrap();
        let mut fill = [0u8; pinblock::FILL_LEN];
        fill[..8].fill(0xFF);
        let field = pinblock::encode_with_fill(Format::Iso4, &pin, Some(&pan), &fill).unwrap();
        let block = pinblock::encipher(&key, Format::Iso4, &field, Some(&pan)).unwrap();
        assert_eq!(upper(&block), s(v, "enciphered_block"));
        assert_eq!(
            pinblock::decipher(&key, Format::Iso4, &block, Some(&pan)).unwrap(),
            pin
        );
        // Another PAN breaks the binding.
        let other = Pan::new("1234567890123456788").unwrap();
        assert!(pinblock::decipher(&key, Format::Iso4, &block, Some(&other)).is_err());
    }
}

#[test]
fn pinblock_format1_and_validation() {
    let pin = Pin::new("987654321012").unwrap();
    let b = pinblock::encode(Format::Iso1, &pin, None).unwrap();
    assert_eq!(b.expose_secret()[0], 0x1C);
    assert_eq!(
        pinblock::decode(Format::Iso1, b.expose_secret(), None).unwrap(),
        pin
    );
    assert_eq!(Pin::new("123"), Err(PinBlockError::InvalidPin));
    assert_eq!(Pin::new("1234567890123"), Err(PinBlockError::InvalidPin));
    assert_eq!(Pin::new("12a4"), Err(PinBlockError::InvalidPin));
    assert_eq!(Pan::new("1234567"), Err(PinBlockError::InvalidPan));
    assert!(matches!(
        pinblock::encode(Format::Iso0, &pin, None),
        Err(PinBlockError::PanRequired(0))
    ));
    // Length nibble 3 and D are rejected.
    assert_eq!(
        pinblock::decode(
            Format::Iso1,
            &[0x13, 0x12, 0x3F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            None
        ),
        Err(PinBlockError::PinLength(3))
    );
    assert_eq!(
        pinblock::decode(
            Format::Iso1,
            &[0x1D, 0x12, 0x3F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            None
        ),
        Err(PinBlockError::PinLength(13))
    );
    // A TDES key cannot encipher format 4, an AES key cannot encipher format 0.
    let tdes = PinKey::new(KeyAlgorithm::Tdes2, &[0x11; 16]).unwrap();
    let pan = Pan::new("4111111111111111").unwrap();
    let f4 = pinblock::encode(Format::Iso4, &pin, Some(&pan)).unwrap();
    assert!(matches!(
        pinblock::encipher(&tdes, Format::Iso4, &f4, Some(&pan)),
        Err(PinBlockError::KeyAlgorithm { .. })
    ));
    assert_eq!(format!("{pan:?}"), "Pan(411111******1111)");
    assert_eq!(format!("{pin:?}"), "Pin(12 digits)");
}

fn mac_message(v: &toml::Value) -> Vec<u8> {
    match v.get("message_ascii") {
        Some(m) => m.as_str().unwrap().as_bytes().to_vec(),
        None => h(v, "message"),
    }
}

#[test]
fn mac_vectors() {
    let t = toml::Value::Table(vectors("mac.toml"));
    let cases = [
        ("iso9797_alg1", Algorithm::Iso9797Alg1(Padding::Method1)),
        ("iso9797_alg3", Algorithm::RetailMac(Padding::Method1)),
        ("aes_cmac", Algorithm::Cmac),
    ];
    for (table, alg) in cases {
        for v in arr(&t, table) {
            let raw = h(v, "key");
            let kalg = if table == "aes_cmac" {
                KeyAlgorithm::Aes128
            } else {
                KeyAlgorithm::des_for_len(raw.len()).unwrap()
            };
            let key = MacKey::new(kalg, &raw).unwrap();
            let msg = mac_message(v);
            let tag = mac::generate(&key, alg, &msg).unwrap();
            assert_eq!(upper(&tag), s(v, "mac"), "{table}");
            mac::verify(&key, alg, &msg, &tag).unwrap();
            mac::verify(&key, alg, &msg, &tag[..4]).unwrap();
            let mut bad = tag.clone();
            bad[0] ^= 1;
            assert_eq!(mac::verify(&key, alg, &msg, &bad), Err(MacError::Mismatch));
        }
    }
}

#[test]
fn hmac_sha256_rfc4231_through_the_nexo_primitive() {
    // nexo authenticates with HMAC-SHA256 from the RustCrypto hmac crate; the
    // RFC 4231 vector pins the construction that nexo.rs builds on.
    use hmac::{Hmac, KeyInit, Mac};
    let t = toml::Value::Table(vectors("mac.toml"));
    for v in arr(&t, "hmac_sha256") {
        let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&h(v, "key")).unwrap();
        m.update(&mac_message(v));
        assert_eq!(upper(&m.finalize().into_bytes()), s(v, "mac"));
    }
}

#[test]
fn mac_padding_method2_and_key_checks() {
    let key = MacKey::new(KeyAlgorithm::Tdes2, &[0x01u8; 16]).unwrap();
    // Method 2 always adds a block when the message is aligned; method 1 does not.
    let aligned = [0x55u8; 16];
    let m1 = mac::generate(&key, Algorithm::RetailMac(Padding::Method1), &aligned).unwrap();
    let m2 = mac::generate(&key, Algorithm::RetailMac(Padding::Method2), &aligned).unwrap();
    assert_ne!(m1, m2);
    let mut explicit = aligned.to_vec();
    explicit.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        mac::generate(&key, Algorithm::RetailMac(Padding::Method1), &explicit).unwrap(),
        m2
    );
    let aes = MacKey::new(KeyAlgorithm::Aes128, &[0u8; 16]).unwrap();
    assert!(matches!(
        mac::generate(&aes, Algorithm::RetailMac(Padding::Method1), b"x"),
        Err(MacError::KeyAlgorithm { .. })
    ));
    assert!(matches!(
        mac::verify(&key, Algorithm::Cmac, b"x", &[0u8; 3]),
        Err(MacError::Length { .. })
    ));
}

#[test]
fn tr31_unwrap_published_blocks() {
    let t = toml::Value::Table(vectors("tr31.toml"));
    for v in arr(&t, "key_block") {
        let raw = h(v, "kbpk");
        let alg = if s(v, "block").starts_with('D') {
            KeyAlgorithm::aes_for_len(raw.len()).unwrap()
        } else {
            KeyAlgorithm::des_for_len(raw.len()).unwrap()
        };
        let kbpk = Kbpk::new(alg, &raw).unwrap();
        let kb = tr31::unwrap(&kbpk, s(v, "block")).unwrap();
        assert_eq!(upper(kb.expose_secret()), s(v, "key"));
        assert_eq!(kb.header.key_usage, "P0");
        let pin_key = kb.pin_key().unwrap();
        assert!(kb.mac_key().is_err());
        if let Some(kcv) = v.get("kcv") {
            assert_eq!(upper(&pin_key.kcv()), kcv.as_str().unwrap());
        }
        if let Some(kcv) = v.get("kcv_cmac") {
            assert_eq!(upper(&pin_key.kcv()), kcv.as_str().unwrap());
            let legacy =
                key_check_value_aes_ecb(pin_key.algorithm(), pin_key.expose_secret()).unwrap();
            assert_eq!(upper(&legacy), s(v, "kcv_legacy_ecb"));
        }
        // Any flipped character breaks the MAC or the format.
        let block = s(v, "block");
        for i in [20, block.len() - 1] {
            let mut b = block.as_bytes().to_vec();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            assert!(tr31::unwrap(&kbpk, std::str::from_utf8(&b).unwrap()).is_err());
        }
    }
}

#[test]
fn key_check_values() {
    let t = toml::Value::Table(vectors("tr31.toml"));
    for v in arr(&t, "kcv") {
        let raw = h(v, "key");
        assert_eq!(
            upper(&key_check_value(
                KeyAlgorithm::des_for_len(raw.len()).unwrap(),
                &raw
            )),
            s(v, "kcv")
        );
    }
}

#[test]
fn tr31_wrap_unwrap_b_and_d_with_optional_blocks() {
    let cases = [
        (Version::B, KeyAlgorithm::Tdes2, 'T', 16usize),
        (Version::B, KeyAlgorithm::Tdes3, 'T', 24),
        (Version::D, KeyAlgorithm::Aes128, 'A', 16),
        (Version::D, KeyAlgorithm::Aes256, 'A', 32),
        (Version::D, KeyAlgorithm::Aes192, 'T', 16),
    ];
    for (version, kalg, wrapped, len) in cases {
        let kbpk = Kbpk::new(kalg, &vec![0x5A; kalg.key_len()]).unwrap();
        let mut header = Header::new(version, "M3", wrapped, 'C', "00", 'E');
        header.optional_blocks.push(tr31::OptionalBlock {
            id: "KS".into(),
            data: "00604B120F9292800000".into(),
        });
        let key: Vec<u8> = (0..len as u8).collect();
        let block = tr31::wrap(&kbpk, &header, &key).unwrap();
        assert!(block.starts_with(version.as_char()));
        assert_eq!(block[1..5].parse::<usize>().unwrap(), block.len());
        let kb = tr31::unwrap(&kbpk, &block).unwrap();
        assert_eq!(kb.expose_secret(), &key[..]);
        assert_eq!(kb.header, header);
        kb.mac_key().unwrap();
        assert!(matches!(kb.pin_key(), Err(Tr31Error::Usage { .. })));
        // (0x5B would differ only in DES parity bits, i.e. be the same TDES key.)
        let other = Kbpk::new(kalg, &vec![0xA5; kalg.key_len()]).unwrap();
        assert_eq!(
            tr31::unwrap(&other, &block).unwrap_err(),
            Tr31Error::MacMismatch
        );
    }
}

#[test]
fn tr31_header_checks() {
    let kbpk = Kbpk::new(KeyAlgorithm::Aes128, &[1; 16]).unwrap();
    let key = [7u8; 16];
    let bad = [
        Header::new(Version::D, "Z9", 'A', 'E', "00", 'E'),
        Header::new(Version::D, "P0", 'Q', 'E', "00", 'E'),
        Header::new(Version::D, "P0", 'A', 'G', "00", 'E'),
        Header::new(Version::D, "P0", 'A', 'E', "0", 'E'),
        Header::new(Version::D, "P0", 'A', 'E', "00", 'Q'),
        Header::new(Version::D, "B0", 'A', 'E', "00", 'E'),
    ];
    for header in bad {
        assert!(tr31::wrap(&kbpk, &header, &key).is_err(), "{header:?}");
    }
    // Version B needs a TDES KBPK, version D an AES one.
    let b = Header::new(Version::B, "P0", 'T', 'E', "00", 'E');
    assert!(matches!(
        tr31::wrap(&kbpk, &b, &key),
        Err(Tr31Error::KbpkAlgorithm { .. })
    ));
    // Key length must fit the algorithm letter.
    let d = Header::new(Version::D, "P0", 'A', 'E', "00", 'N');
    assert!(tr31::wrap(&kbpk, &d, &[0u8; 15]).is_err());
    let block = tr31::wrap(&kbpk, &d, &key).unwrap();
    assert!(!tr31::unwrap(&kbpk, &block).unwrap().header.is_exportable());
    // Length field must match.
    let mut wrong = block.clone();
    wrong.push('0');
    assert!(matches!(
        tr31::unwrap(&kbpk, &wrong),
        Err(Tr31Error::LengthField { .. }) | Err(Tr31Error::Malformed(_))
    ));
}

fn nexo_vector() -> (toml::Value, NexoKey) {
    let t = toml::Value::Table(vectors("nexo.toml"));
    let key = NexoKey::derive(s(&t, "passphrase"), s(&t, "key_identifier"), 1).unwrap();
    (t, key)
}

#[test]
fn nexo_decrypts_adyen_library_envelope() {
    let (t, key) = nexo_vector();
    let plain = nexo::decrypt(&key, s(&t, "envelope").as_bytes()).unwrap();
    assert_eq!(plain, s(&t, "plaintext"));
}

#[test]
fn nexo_encrypt_matches_adyen_library_byte_for_byte() {
    let (t, key) = nexo_vector();
    let env: serde_json::Value = serde_json::from_str(s(&t, "envelope")).unwrap();
    let trailer = &env["SaleToPOIRequest"]["SecurityTrailer"];
    use base64::Engine as _;
    let nonce: [u8; 16] = base64::engine::general_purpose::STANDARD
        .decode(trailer["Nonce"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let ours = nexo::encrypt_with_nonce(&key, s(&t, "plaintext").as_bytes(), &nonce).unwrap();
    let ours: serde_json::Value = serde_json::from_str(&ours).unwrap();
    assert_eq!(ours, env);
}

#[test]
fn nexo_rejects_tampering_and_wrong_keys() {
    let (t, key) = nexo_vector();
    let env = s(&t, "envelope");
    let mut v: serde_json::Value = serde_json::from_str(env).unwrap();
    // Flip one bit of the first ciphertext block: padding survives, HMAC fails.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut blob = b64
        .decode(v["SaleToPOIRequest"]["NexoBlob"].as_str().unwrap())
        .unwrap();
    blob[3] ^= 0x10;
    v["SaleToPOIRequest"]["NexoBlob"] = b64.encode(&blob).into();
    assert_eq!(
        nexo::decrypt(&key, v.to_string().as_bytes()),
        Err(NexoError::Authentication)
    );
    let wrong = NexoKey::derive("another passphrase", "mykey", 1).unwrap();
    assert_eq!(
        nexo::decrypt(&wrong, env.as_bytes()),
        Err(NexoError::Authentication)
    );
    let other_id = NexoKey::derive("mysupersecretpassphrase", "otherkey", 1).unwrap();
    assert!(matches!(
        nexo::decrypt(&other_id, env.as_bytes()),
        Err(NexoError::KeyMismatch { .. })
    ));
    let err = nexo::decrypt(&wrong, env.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(!err.contains("passphrase\"") && !err.contains("mysupersecret"));
    assert!(matches!(
        nexo::decrypt(&key, b"{\"SaleToPOIRequest\":{}}"),
        Err(NexoError::Shape(_))
    ));
    assert!(matches!(
        NexoKey::derive("pass\u{20AC}", "k", 1),
        Err(NexoError::Passphrase)
    ));
    assert_eq!(
        format!("{key:?}"),
        "NexoKey { key_identifier: \"mykey\", key_version: 1, .. }"
    );
}

#[test]
fn debug_output_shows_only_kcv() {
    let key = PinKey::new(
        KeyAlgorithm::Tdes2,
        &hex::decode("0123456789ABCDEFFEDCBA9876543210").unwrap(),
    )
    .unwrap();
    assert_eq!(format!("{key:?}"), "PinKey(TDES-2KEY, kcv 08D7B4)");
}
