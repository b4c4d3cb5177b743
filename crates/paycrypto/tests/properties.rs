//! Property tests: encode/decode and wrap/unwrap round trips, and decoders
//! that never panic on arbitrary input.

use paycrypto::nexo::{self, NexoKey};
use paycrypto::pinblock::{self, Format, Pan, Pin};
use paycrypto::tr31::{self, Header, Version};
use paycrypto::{Kbpk, KeyAlgorithm, PinKey};
use proptest::prelude::*;
use std::sync::LazyLock;

/// Derived once: PBKDF2 with 4000 rounds per case would dominate the run.
static NEXO_KEY: LazyLock<NexoKey> =
    LazyLock::new(|| NexoKey::derive("prop passphrase", "prop", 3).unwrap());

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![
        Just(Format::Iso0),
        Just(Format::Iso1),
        Just(Format::Iso3),
        Just(Format::Iso4)
    ]
}

proptest! {
    #[test]
    fn pinblock_round_trip(
        pin in "[0-9]{4,12}",
        pan in "[0-9]{8,19}",
        format in format(),
        fill in any::<[u8; 16]>(),
        key in any::<[u8; 16]>(),
    ) {
        let pin = Pin::new(&pin).unwrap();
        let pan = Pan::new(&pan).unwrap();
        let clear = pinblock::encode_with_fill(format, &pin, Some(&pan), &fill).unwrap();
        prop_assert_eq!(&pinblock::decode(format, clear.expose_secret(), Some(&pan)).unwrap(), &pin);
        let alg = if format == Format::Iso4 { KeyAlgorithm::Aes128 } else { KeyAlgorithm::Tdes2 };
        let key = PinKey::new(alg, &key).unwrap();
        let block = pinblock::encipher(&key, format, &clear, Some(&pan)).unwrap();
        prop_assert_eq!(&pinblock::decipher(&key, format, &block, Some(&pan)).unwrap(), &pin);
    }

    #[test]
    fn pinblock_decoders_never_panic(
        block in proptest::collection::vec(any::<u8>(), 0..40),
        pan in "[0-9]{8,19}",
        format in format(),
        key in any::<[u8; 16]>(),
    ) {
        let pan = Pan::new(&pan).unwrap();
        let _ = pinblock::decode(format, &block, Some(&pan));
        for alg in [KeyAlgorithm::Aes128, KeyAlgorithm::Tdes2] {
            let key = PinKey::new(alg, &key).unwrap();
            let _ = pinblock::decipher(&key, format, &block, Some(&pan));
        }
    }

    #[test]
    fn tr31_round_trip(
        aes in any::<bool>(),
        kbpk in any::<[u8; 32]>(),
        key in any::<[u8; 32]>(),
        key_len_sel in 0usize..3,
        usage in prop_oneof![Just(("P0", 'E')), Just(("M6", 'C')), Just(("D0", 'B')), Just(("K1", 'D')), Just(("B0", 'X'))],
        exportability in prop_oneof![Just('E'), Just('N'), Just('S')],
        opt in proptest::option::of("[ -~]{0,40}"),
    ) {
        let (kalg, version, letter, lens): (_, _, _, [usize; 3]) = if aes {
            (KeyAlgorithm::Aes256, Version::D, 'A', [16, 24, 32])
        } else {
            (KeyAlgorithm::Tdes3, Version::B, 'T', [16, 24, 16])
        };
        let kbpk = Kbpk::new(kalg, &kbpk[..kalg.key_len()]).unwrap();
        let mut header = Header::new(version, usage.0, letter, usage.1, "12", exportability);
        if let Some(data) = opt {
            header.optional_blocks.push(tr31::OptionalBlock { id: "DA".into(), data });
        }
        let key = &key[..lens[key_len_sel]];
        let block = tr31::wrap(&kbpk, &header, key).unwrap();
        let kb = tr31::unwrap(&kbpk, &block).unwrap();
        prop_assert_eq!(kb.expose_secret(), key);
        prop_assert_eq!(kb.header, header);
    }

    #[test]
    fn tr31_unwrap_never_panics(block in "[ -~]{0,200}", aes in any::<bool>()) {
        let kbpk = if aes { Kbpk::new(KeyAlgorithm::Aes128, &[3; 16]) } else { Kbpk::new(KeyAlgorithm::Tdes2, &[3; 16]) }.unwrap();
        let _ = tr31::unwrap(&kbpk, &block);
    }

    #[test]
    fn tr31_unwrap_never_panics_on_header_like_input(
        version in prop_oneof![Just('A'), Just('B'), Just('D'), Just('X')],
        body in "[0-9A-F]{0,180}",
        nblocks in 0u8..4,
        tail in "[ -~]{0,60}",
    ) {
        let text = format!("{version}0000P0TE00E{nblocks:02}00{tail}{body}");
        let text = format!("{version}{:04}{}", text.len(), &text[5..]);
        for kbpk in [Kbpk::new(KeyAlgorithm::Aes128, &[3; 16]).unwrap(), Kbpk::new(KeyAlgorithm::Tdes2, &[3; 16]).unwrap()] {
            let _ = tr31::unwrap(&kbpk, &text);
        }
    }

    #[test]
    fn nexo_round_trip(body in "[ -~]{0,300}", response in any::<bool>(), nonce in any::<[u8; 16]>()) {
        let root = if response { "SaleToPOIResponse" } else { "SaleToPOIRequest" };
        let msg = serde_json::json!({ root: { "MessageHeader": { "MessageType": "Request" }, "Note": body } }).to_string();
        let env = nexo::encrypt_with_nonce(&NEXO_KEY, msg.as_bytes(), &nonce).unwrap();
        prop_assert_eq!(nexo::decrypt(&NEXO_KEY, env.as_bytes()).unwrap(), msg);
    }

    #[test]
    fn nexo_decrypt_never_panics(input in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = nexo::decrypt(&NEXO_KEY, &input);
    }

    #[test]
    fn nexo_decrypt_never_panics_on_envelope_like_input(
        blob in "[A-Za-z0-9+/=]{0,80}",
        nonce in "[A-Za-z0-9+/=]{0,30}",
        hmac in "[A-Za-z0-9+/=]{0,50}",
        version in 0u64..3,
    ) {
        let env = serde_json::json!({"SaleToPOIResponse": {"MessageHeader": {}, "NexoBlob": blob,
            "SecurityTrailer": {"AdyenCryptoVersion": 1, "KeyIdentifier": "prop", "KeyVersion": version, "Nonce": nonce, "Hmac": hmac}}});
        prop_assert!(nexo::decrypt(&NEXO_KEY, env.to_string().as_bytes()).is_err());
    }
}
