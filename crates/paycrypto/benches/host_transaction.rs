//! The host's cryptographic cost per transaction: AES DUKPT working-key
//! derivation from the BDK and the KSN, AES-CMAC over a 200-byte message and
//! a format-4 PIN block decipher.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use paycrypto::dukpt::aes;
use paycrypto::mac::{self, Algorithm};
use paycrypto::pinblock::{self, Format, Pan, Pin};
use paycrypto::{Bdk, KeyAlgorithm};

fn host_transaction(c: &mut Criterion) {
    let bdk = Bdk::new(KeyAlgorithm::Aes128, &[0xFE; 16]).unwrap();
    // Counter 0x845FED has 12 bits set: a mid-life terminal, 13 derivations
    // (initial key + 12 ladder steps) before the working keys.
    let mut ksn_bytes = [0x12u8; 12];
    ksn_bytes[8..].copy_from_slice(&0x0084_5FEDu32.to_be_bytes());
    let ksn = aes::Ksn::from_bytes(&ksn_bytes).unwrap();
    let message = [0x5Au8; 200];
    let pan = Pan::new("4111111111111111").unwrap();
    let pin = Pin::new("1234").unwrap();
    let (mac, block) = {
        let tk = aes::transaction_key_from_bdk(&bdk, &ksn).unwrap();
        let mk =
            aes::mac_key(&tk, &ksn, aes::MacDirection::Generate, KeyAlgorithm::Aes128).unwrap();
        let pk = aes::pin_key(&tk, &ksn, KeyAlgorithm::Aes128).unwrap();
        let clear = pinblock::encode(Format::Iso4, &pin, Some(&pan)).unwrap();
        (
            mac::generate(&mk, Algorithm::Cmac, &message).unwrap(),
            pinblock::encipher(&pk, Format::Iso4, &clear, Some(&pan)).unwrap(),
        )
    };

    c.bench_function(
        "host transaction: DUKPT keys + CMAC verify (200 B) + PIN block 4",
        |b| {
            b.iter(|| {
                let ksn = black_box(&ksn);
                let tk = aes::transaction_key_from_bdk(black_box(&bdk), ksn).unwrap();
                let mk = aes::mac_key(&tk, ksn, aes::MacDirection::Generate, KeyAlgorithm::Aes128)
                    .unwrap();
                let pk = aes::pin_key(&tk, ksn, KeyAlgorithm::Aes128).unwrap();
                mac::verify(&mk, Algorithm::Cmac, black_box(&message), &mac[..8]).unwrap();
                pinblock::decipher(&pk, Format::Iso4, black_box(&block), Some(&pan)).unwrap()
            })
        },
    );

    let tk = aes::transaction_key_from_bdk(&bdk, &ksn).unwrap();
    c.bench_function("AES DUKPT: BDK + KSN -> PIN and MAC keys", |b| {
        b.iter(|| {
            let tk = aes::transaction_key_from_bdk(black_box(&bdk), black_box(&ksn)).unwrap();
            let mk =
                aes::mac_key(&tk, &ksn, aes::MacDirection::Generate, KeyAlgorithm::Aes128).unwrap();
            (mk, aes::pin_key(&tk, &ksn, KeyAlgorithm::Aes128).unwrap())
        })
    });
    let mk = aes::mac_key(&tk, &ksn, aes::MacDirection::Generate, KeyAlgorithm::Aes128).unwrap();
    c.bench_function("AES-CMAC, 200 bytes", |b| {
        b.iter(|| mac::generate(&mk, Algorithm::Cmac, black_box(&message)).unwrap())
    });
    let pk = aes::pin_key(&tk, &ksn, KeyAlgorithm::Aes128).unwrap();
    c.bench_function("ISO 9564 format 4 decipher", |b| {
        b.iter(|| pinblock::decipher(&pk, Format::Iso4, black_box(&block), Some(&pan)).unwrap())
    });
}

criterion_group!(benches, host_transaction);
criterion_main!(benches);
