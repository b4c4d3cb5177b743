//! AES DUKPT (X9.24-3-2017) and TDES DUKPT (X9.24-1-2009) against the
//! published test vectors in `tests/vectors/dukpt-*.toml`.

mod common;

use common::{arr, h, s, upper, vectors};
use paycrypto::dukpt::{DukptError, aes, tdes};
use paycrypto::pinblock::{self, Format, Pan, Pin};
use paycrypto::{Bdk, InitialKey, KeyAlgorithm};

fn aes_bdk(v: &toml::Value) -> Bdk {
    let b = h(v, "bdk");
    Bdk::new(KeyAlgorithm::aes_for_len(b.len()).unwrap(), &b).unwrap()
}

fn ikid(v: &toml::Value) -> [u8; 8] {
    h(v, "initial_key_id").try_into().unwrap()
}

#[test]
fn aes_initial_keys() {
    let t = toml::Value::Table(vectors("dukpt-aes.toml"));
    for suite in ["aes128", "aes256"] {
        let v = &t[suite];
        let ik = aes::initial_key(&aes_bdk(v), ikid(v)).unwrap();
        assert_eq!(upper(ik.expose_secret()), s(v, "initial_key"), "{suite}");
    }
}

#[test]
fn aes_transaction_keys_host_side() {
    let t = toml::Value::Table(vectors("dukpt-aes.toml"));
    let mut checked = 0;
    for suite in ["aes128", "aes256"] {
        let v = &t[suite];
        let bdk = aes_bdk(v);
        for row in arr(v, "transaction") {
            let ksn = aes::Ksn::from_bytes(&h(row, "ksn")).unwrap();
            let tk = aes::transaction_key_from_bdk(&bdk, &ksn).unwrap();
            assert_eq!(
                upper(tk.expose_secret()),
                s(row, "transaction_key"),
                "{suite} {}",
                s(row, "ksn")
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 30);
}

#[test]
fn aes_working_keys_counter_1() {
    let t = toml::Value::Table(vectors("dukpt-aes.toml"));
    let v = &t["aes128"];
    let w = &v["working_keys_counter_1"];
    let ksn = aes::Ksn::from_bytes(&h(w, "ksn")).unwrap();
    let tk = aes::transaction_key_from_bdk(&aes_bdk(v), &ksn).unwrap();
    assert_eq!(upper(tk.expose_secret()), s(w, "transaction_key"));
    let a = KeyAlgorithm::Aes128;
    let pin = aes::pin_key(&tk, &ksn, a).unwrap();
    assert_eq!(upper(pin.expose_secret()), s(w, "pin_encryption"));
    for (dir, key) in [
        (aes::MacDirection::Generate, "mac_generation"),
        (aes::MacDirection::Verify, "mac_verification"),
        (aes::MacDirection::Both, "mac_both"),
    ] {
        assert_eq!(
            upper(aes::mac_key(&tk, &ksn, dir, a).unwrap().expose_secret()),
            s(w, key)
        );
    }
    for (dir, key) in [
        (aes::DataDirection::Encrypt, "data_encrypt"),
        (aes::DataDirection::Decrypt, "data_decrypt"),
        (aes::DataDirection::Both, "data_both"),
    ] {
        assert_eq!(
            upper(aes::data_key(&tk, &ksn, dir, a).unwrap().expose_secret()),
            s(w, key)
        );
    }
    let tdes2 = aes::pin_key(&tk, &ksn, KeyAlgorithm::Tdes2).unwrap();
    assert_eq!(upper(tdes2.expose_secret()), s(w, "pin_encryption_2tdea"));
    let tdes3 = aes::pin_key(&tk, &ksn, KeyAlgorithm::Tdes3).unwrap();
    assert_eq!(upper(tdes3.expose_secret()), s(w, "pin_encryption_3tdea"));
    // An AES-128 derivation key cannot yield an AES-256 working key.
    assert!(aes::pin_key(&tk, &ksn, KeyAlgorithm::Aes256).is_err());

    let v256 = &t["aes256"];
    let w256 = &v256["working_keys_counter_1"];
    let ksn = aes::Ksn::from_bytes(&h(w256, "ksn")).unwrap();
    let tk = aes::transaction_key_from_bdk(&aes_bdk(v256), &ksn).unwrap();
    let pin = aes::pin_key(&tk, &ksn, KeyAlgorithm::Aes256).unwrap();
    assert_eq!(upper(pin.expose_secret()), s(w256, "pin_encryption"));
}

#[test]
fn aes_format4_pin_block_under_dukpt_pin_key() {
    let t = toml::Value::Table(vectors("dukpt-aes.toml"));
    let v = &t["aes128"];
    let p = &v["pin_block"];
    let ksn = aes::Ksn::from_bytes(&h(p, "ksn")).unwrap();
    let tk = aes::transaction_key_from_bdk(&aes_bdk(v), &ksn).unwrap();
    let key = aes::pin_key(&tk, &ksn, KeyAlgorithm::Aes128).unwrap();
    let pin = Pin::new(s(p, "pin")).unwrap();
    let pan = Pan::new(s(p, "pan")).unwrap();
    let mut fill = [0u8; pinblock::FILL_LEN];
    fill[..8].copy_from_slice(&h(p, "random_fill"));
    let field = pinblock::encode_with_fill(Format::Iso4, &pin, Some(&pan), &fill).unwrap();
    assert_eq!(upper(field.expose_secret()), s(p, "plain_pin_field"));
    let block = pinblock::encipher(&key, Format::Iso4, &field, Some(&pan)).unwrap();
    assert_eq!(upper(&block), s(p, "enciphered_pin_block"));
    let back = pinblock::decipher(&key, Format::Iso4, &block, Some(&pan)).unwrap();
    assert_eq!(back, pin);
}

/// Runs a terminal from `next` and checks that it produces exactly the
/// rows' KSNs (in order) with the rows' transaction keys.
fn check_aes_terminal(ik: &InitialKey, id: [u8; 8], rows: &[toml::Value]) {
    let first = aes::Ksn::from_bytes(&h(&rows[0], "ksn")).unwrap();
    let mut terminal = aes::Terminal::resume(ik.clone(), id, first.counter()).unwrap();
    for row in rows {
        let (ksn, tk) = terminal.next_transaction().unwrap();
        assert_eq!(upper(ksn.as_bytes()), s(row, "ksn"));
        assert_eq!(
            upper(tk.expose_secret()),
            s(row, "transaction_key"),
            "{}",
            s(row, "ksn")
        );
    }
}

#[test]
fn aes_terminal_sequences_skip_and_exhaust() {
    let t = toml::Value::Table(vectors("dukpt-aes.toml"));
    for suite in ["aes128", "aes256"] {
        let v = &t[suite];
        let id = ikid(v);
        let ik = aes::initial_key(&aes_bdk(v), id).unwrap();
        let rows = arr(v, "transaction");
        // Fresh load: counters 1..8.
        let mut terminal = aes::Terminal::load(ik.clone(), id).unwrap();
        for row in &rows[..8] {
            let (ksn, tk) = terminal.next_transaction().unwrap();
            assert_eq!(upper(ksn.as_bytes()), s(row, "ksn"));
            assert_eq!(upper(tk.expose_secret()), s(row, "transaction_key"));
        }
        // 0x1FFFE → 0x20000 (0x1FFFF has 17 bits set and is skipped) → 0x20001.
        check_aes_terminal(&ik, id, &rows[8..11]);
        // The last four counters, then exhaustion.
        check_aes_terminal(&ik, id, &rows[11..15]);
        let last = aes::Ksn::from_bytes(&h(&rows[14], "ksn")).unwrap();
        let mut terminal = aes::Terminal::resume(ik.clone(), id, last.counter()).unwrap();
        terminal.next_transaction().unwrap();
        assert_eq!(terminal.next_ksn(), None);
        assert!(matches!(
            terminal.next_transaction(),
            Err(DukptError::Exhausted)
        ));
    }
}

#[test]
fn aes_ksn_validation() {
    assert!(matches!(
        aes::Ksn::from_bytes(&[0; 11]),
        Err(DukptError::KsnLength { .. })
    ));
    let mut b = [0x12u8; 12];
    b[8..].copy_from_slice(&0u32.to_be_bytes());
    assert!(matches!(
        aes::Ksn::from_bytes(&b),
        Err(DukptError::InvalidCounter { .. })
    ));
    b[8..].copy_from_slice(&0x1FFFFu32.to_be_bytes());
    assert!(matches!(
        aes::Ksn::from_bytes(&b),
        Err(DukptError::InvalidCounter { .. })
    ));
    b[8..].copy_from_slice(&0xFFFF0000u32.to_be_bytes());
    assert!(aes::Ksn::from_bytes(&b).is_ok());
}

fn tdes_setup(t: &toml::Value) -> (Bdk, tdes::Ksn) {
    let bdk = Bdk::new(KeyAlgorithm::Tdes2, &h(t, "bdk")).unwrap();
    (bdk, tdes::Ksn::from_bytes(&h(t, "initial_ksn")).unwrap())
}

#[test]
fn tdes_ipek_variants_and_data_key() {
    let t = toml::Value::Table(vectors("dukpt-tdes.toml"));
    let (bdk, iksn) = tdes_setup(&t);
    let ipek = tdes::ipek(&bdk, &iksn).unwrap();
    assert_eq!(upper(ipek.expose_secret()), s(&t, "ipek"));
    assert_eq!(upper(&ipek.kcv()), s(&t, "ipek_kcv"));
    let f = &t["first"];
    let ksn = tdes::Ksn::from_bytes(&h(f, "ksn")).unwrap();
    let tk = tdes::transaction_key(&ipek, &ksn).unwrap();
    assert_eq!(upper(tk.expose_secret()), s(f, "transaction_key"));
    assert_eq!(
        upper(tdes::pin_key(&tk).unwrap().expose_secret()),
        s(f, "pin_key")
    );
    let mac = tdes::mac_key(&tk, tdes::Direction::Request).unwrap();
    assert_eq!(upper(mac.expose_secret()), s(f, "mac_request_key"));
    let data = tdes::data_key(&tk, tdes::Direction::Request).unwrap();
    assert_eq!(upper(data.expose_secret()), s(f, "data_key_2009"));
}

fn check_tdes_row(
    t: &toml::Value,
    row: &toml::Value,
    ksn: &tdes::Ksn,
    tk: &paycrypto::DerivationKey,
) {
    assert_eq!(upper(ksn.as_bytes()), s(row, "ksn"));
    assert_eq!(
        upper(tk.expose_secret()),
        s(row, "transaction_key"),
        "{}",
        s(row, "ksn")
    );
    let pin = Pin::new(s(t, "pin")).unwrap();
    let pan = Pan::new(s(t, "pan")).unwrap();
    let clear = pinblock::encode(Format::Iso0, &pin, Some(&pan)).unwrap();
    assert_eq!(
        upper(clear.expose_secret()),
        s(t, "clear_pin_block_format0")
    );
    let key = tdes::pin_key(tk).unwrap();
    let block = pinblock::encipher(&key, Format::Iso0, &clear, Some(&pan)).unwrap();
    assert_eq!(
        upper(&block),
        s(row, "encrypted_pin_block"),
        "{}",
        s(row, "ksn")
    );
    assert_eq!(
        pinblock::decipher(&key, Format::Iso0, &block, Some(&pan)).unwrap(),
        pin
    );
}

#[test]
fn tdes_annex_a4_host_and_terminal() {
    let t = toml::Value::Table(vectors("dukpt-tdes.toml"));
    let (bdk, iksn) = tdes_setup(&t);
    let ipek = tdes::ipek(&bdk, &iksn).unwrap();
    let initial = arr(&t, "initial_sequence");
    let rollover = arr(&t, "rollover_sequence");
    assert_eq!((initial.len(), rollover.len()), (21, 13));
    // Host: every row from the BDK.
    for row in initial.iter().chain(rollover) {
        let ksn = tdes::Ksn::from_bytes(&h(row, "ksn")).unwrap();
        let tk = tdes::transaction_key_from_bdk(&bdk, &ksn).unwrap();
        check_tdes_row(&t, row, &ksn, &tk);
    }
    // Terminal: the initial sequence from key loading.
    let mut terminal = tdes::Terminal::load(ipek.clone(), iksn).unwrap();
    for row in initial {
        let (ksn, tk) = terminal.next_transaction().unwrap();
        check_tdes_row(&t, row, &ksn, &tk);
    }
    // Terminal: the rollover sequence, where counters with more than 10 bits
    // set are skipped (…F802 → …F804 → … → F00000).
    let start = tdes::Ksn::from_bytes(&h(&rollover[0], "ksn")).unwrap();
    let mut terminal = tdes::Terminal::resume(ipek, iksn, start.counter()).unwrap();
    for row in rollover {
        let (ksn, tk) = terminal.next_transaction().unwrap();
        check_tdes_row(&t, row, &ksn, &tk);
    }
}

#[test]
fn tdes_terminal_exhausts_after_last_counter() {
    let t = toml::Value::Table(vectors("dukpt-tdes.toml"));
    let (bdk, iksn) = tdes_setup(&t);
    let ipek = tdes::ipek(&bdk, &iksn).unwrap();
    // 0x1FF800 is the last 21-bit counter with at most 10 bits set.
    let mut terminal = tdes::Terminal::resume(ipek, iksn, 0x1FF800).unwrap();
    let (ksn, _) = terminal.next_transaction().unwrap();
    assert_eq!(ksn.counter(), 0x1FF800);
    assert!(matches!(
        terminal.next_transaction(),
        Err(DukptError::Exhausted)
    ));
}

#[test]
fn terminal_matches_host_over_a_long_run() {
    // 3000 consecutive AES transactions and 3000 TDES ones: the terminal's
    // register walk and the host's bit walk must agree on every key.
    let t = toml::Value::Table(vectors("dukpt-aes.toml"));
    let v = &t["aes128"];
    let id = ikid(v);
    let ik = aes::initial_key(&aes_bdk(v), id).unwrap();
    let mut terminal = aes::Terminal::resume(ik.clone(), id, 0xFFC0).unwrap();
    for _ in 0..3000 {
        let (ksn, tk) = terminal.next_transaction().unwrap();
        assert!(ksn.counter().count_ones() <= 16);
        assert!(aes::transaction_key(&ik, &ksn).unwrap().ct_eq(&tk));
    }
    let t = toml::Value::Table(vectors("dukpt-tdes.toml"));
    let (bdk, iksn) = tdes_setup(&t);
    let ipek = tdes::ipek(&bdk, &iksn).unwrap();
    let mut terminal = tdes::Terminal::resume(ipek.clone(), iksn, 0x3F0).unwrap();
    for _ in 0..3000 {
        let (ksn, tk) = terminal.next_transaction().unwrap();
        assert!(ksn.counter().count_ones() <= 10);
        assert!(tdes::transaction_key(&ipek, &ksn).unwrap().ct_eq(&tk));
    }
}
