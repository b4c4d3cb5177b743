//! The host over real mutual TLS on loopback, driven by a test terminal:
//! every message type, every decline, duplicates, reversals, MAC and KSN
//! failures, identity checks, malformed input. After each test the ledger's
//! invariants hold.

mod common;

use common::*;
use iso8583::dialect::CUP;
use ledger::LedgerRead;

async fn balance_of(h: &Harness, t: &mut TestTerminal, pan: &str) -> u64 {
    let _ = h;
    let m = t.request(
        "0200",
        1,
        None,
        &[
            (2, pan),
            (3, "310000"),
            (25, "00"),
            (49, "156"),
            (22, "021"),
        ],
    );
    let pin = if pan == APPROVED { Some("1234") } else { None };
    let mut m = m;
    if let Some(pin) = pin {
        m.set(52, pin);
    }
    let r = t.send(m).await;
    assert_eq!(code(&r), "00", "balance inquiry");
    let f54 = r.get_str(54).unwrap();
    assert_eq!(&f54[..8], "1002156C");
    f54[8..].parse().unwrap()
}

#[tokio::test]
async fn sign_on_echo_and_sign_off() {
    let h = Harness::start().await;
    let mut t = h.terminal().await;
    let r = {
        let m = t.request("0800", 0, Some(3), &[]);
        t.send_plain(m)
    }
    .await;
    assert_eq!(code(&r), "00");
    assert_eq!(r.mti().as_str(), "0810");
    let params = r.get(62).unwrap();
    assert_eq!(
        iso8583::tlv::find(params, iso8583::params::MERCHANT_NAME).unwrap(),
        Some(&b"Corner Shop"[..])
    );
    assert_eq!(
        iso8583::tlv::find(params, iso8583::params::OFFLINE_FLOOR).unwrap(),
        Some(&b"2000"[..])
    );
    let r = {
        let m = t.request("0820", 0, Some(301), &[]);
        t.send_plain(m)
    }
    .await;
    assert_eq!((r.mti().as_str(), code(&r)), ("0830", "00"));
    let r = {
        let m = t.request("0820", 0, Some(2), &[]);
        t.send_plain(m)
    }
    .await;
    assert_eq!(code(&r), "00");
}

#[tokio::test]
async fn sale_is_charged_once_and_a_retransmission_gets_the_first_answer() {
    let h = Harness::start().await;
    let mut t = h.terminal().await;
    let before = balance_of(&h, &mut t, APPROVED).await;
    let sale = t.sale(APPROVED, 12_50, Some("1234"));
    let sent = t.seal(sale);
    let first = t.send_wire(&sent.wire).await.unwrap();
    let again = t.send_wire(&sent.wire).await.unwrap();
    assert_eq!(first, again, "byte-identical response to a retransmission");

    let r = CUP.decode(&first).unwrap();
    assert_eq!(code(&r), "00");
    assert_eq!(r.auth_code().map(str::len), Some(6));
    assert_eq!(r.rrn().map(str::len), Some(12));
    assert_eq!(balance_of(&h, &mut t, APPROVED).await, before - 12_50);
    // Retried under the next DUKPT key (new KSN and MAC), the same request
    // gets the first answer, MACed under the retry's key.
    let sale = {
        let m = t.sale(NO_PIN, 300, None);
        t.seal(m)
    };
    let first = t.exchange(&sale).await;
    let mut retry = sale.request.clone();
    retry.remove(62);
    retry.remove(64);
    let retry = {
        let m = retry;
        t.seal(m)
    };
    let again = t.exchange(&retry).await;
    assert_eq!(
        (code(&first), first.rrn(), first.auth_code()),
        (code(&again), again.rrn(), again.auth_code())
    );
    assert_eq!(
        h.journal_count(),
        4,
        "two sales and two balance inquiries: the retry adds nothing"
    );
    // The same STAN and batch with different content is a duplicate, not a charge.
    let mut reuse = t.sale(APPROVED, 99, Some("1234"));
    reuse
        .set_stan(sent.request.stan().unwrap().unwrap())
        .unwrap();
    assert_eq!(code(&t.send(reuse).await), "94");
    assert_eq!(balance_of(&h, &mut t, APPROVED).await, before - 12_50);
    h.assert_ledger_consistent();
}

#[tokio::test]
async fn declines_carry_their_reasons() {
    let h = Harness::start().await;
    let mut t = h.terminal().await;
    let cases: Vec<(&str, u64, Option<&str>, &str)> = vec![
        (APPROVED, 100, Some("9999"), "55"), // wrong PIN
        (APPROVED, 100, None, "55"),         // PIN required
        (EXPIRED, 100, None, "54"),
        (BLOCKED, 100, None, "05"),
        (UNKNOWN, 100, None, "14"),
        (NO_PIN, 6_000, None, "51"),            // holds 50.00
        (APPROVED, 55_000, Some("1234"), "61"), // over the card's 500.00 per transaction
        (APPROVED, 0, Some("1234"), "13"),
    ];
    for (pan, amount, pin, expected) in cases {
        let r = {
            let m = t.sale(pan, amount, pin);
            t.send(m)
        }
        .await;
        assert_eq!(
            code(&r),
            expected,
            "sale of {amount} on {pan} with PIN {pin:?}"
        );
        assert!(r.auth_code().is_none(), "a decline has no approval code");
    }
    // Daily limit 800.00: two of 300.00 pass, the third does not.
    for expected in ["00", "00", "61"] {
        assert_eq!(
            code(
                &{
                    let m = t.sale(APPROVED, 30_000, Some("1234"));
                    t.send(m)
                }
                .await
            ),
            expected
        );
    }
    // Terminal maximum is 600.00 (the card's own limit is lower, so use the
    // wallet-free path: a currency mismatch is an invalid amount).
    let mut other_currency = t.sale(NO_PIN, 100, None);
    other_currency.set(49, "840");
    assert_eq!(code(&t.send(other_currency).await), "13");
    h.assert_ledger_consistent();
}

fn original(t: &TestTerminal, stan: u32) -> String {
    format!("{:06}{:06}", t.batch, stan)
}

#[tokio::test]
async fn void_and_refund_are_linked_to_their_sale() {
    let h = Harness::start().await;
    let mut t = h.terminal().await;
    let start = balance_of(&h, &mut t, NO_PIN).await;
    let sale = t.sale(NO_PIN, 2_000, None);
    let sale_stan = sale.stan().unwrap().unwrap();
    assert_eq!(code(&t.send(sale).await), "00");
    let void = |t: &mut TestTerminal, amount: &str, stan: u32| {
        let o = original(t, stan);
        t.request(
            "0200",
            23,
            None,
            &[
                (2, NO_PIN),
                (3, "200000"),
                (4, amount),
                (25, "00"),
                (49, "156"),
                (61, &o),
            ],
        )
    };
    assert_eq!(
        code(
            &{
                let m = void(&mut t, "000000001999", sale_stan);
                t.send(m)
            }
            .await
        ),
        "13",
        "a void must match the amount"
    );
    assert_eq!(
        code(
            &{
                let m = void(&mut t, "000000002000", sale_stan);
                t.send(m)
            }
            .await
        ),
        "00"
    );
    assert_eq!(
        code(
            &{
                let m = void(&mut t, "000000002000", sale_stan);
                t.send(m)
            }
            .await
        ),
        "12",
        "already voided"
    );
    assert_eq!(
        code(
            &{
                let m = void(&mut t, "000000002000", 9999);
                t.send(m)
            }
            .await
        ),
        "25",
        "no such original"
    );
    assert_eq!(balance_of(&h, &mut t, NO_PIN).await, start);

    let sale = t.sale(NO_PIN, 3_000, None);
    let sale_stan = sale.stan().unwrap().unwrap();
    assert_eq!(code(&t.send(sale).await), "00");
    let refund = |t: &mut TestTerminal, amount: &str| {
        let o = original(t, sale_stan);
        t.request(
            "0220",
            25,
            None,
            &[
                (2, NO_PIN),
                (3, "200000"),
                (4, amount),
                (25, "00"),
                (49, "156"),
                (61, &o),
            ],
        )
    };
    assert_eq!(
        code(
            &{
                let m = refund(&mut t, "000000001000");
                t.send(m)
            }
            .await
        ),
        "00"
    );
    assert_eq!(
        code(
            &{
                let m = refund(&mut t, "000000001500");
                t.send(m)
            }
            .await
        ),
        "00"
    );
    assert_eq!(
        code(
            &{
                let m = refund(&mut t, "000000000600");
                t.send(m)
            }
            .await
        ),
        "13",
        "no refund beyond the sale"
    );
    assert_eq!(balance_of(&h, &mut t, NO_PIN).await, start - 500);
    h.assert_ledger_consistent();
}

#[tokio::test]
async fn preauthorization_completion_and_cancel() {
    let h = Harness::start().await;
    let mut t = h.terminal().await;
    let start = balance_of(&h, &mut t, NO_PIN).await;
    let preauth = |t: &mut TestTerminal, amount: &str| {
        t.request(
            "0100",
            10,
            None,
            &[
                (2, NO_PIN),
                (3, "030000"),
                (4, amount),
                (25, "06"),
                (49, "156"),
            ],
        )
    };
    let p1 = preauth(&mut t, "000000003000");
    let p1_stan = p1.stan().unwrap().unwrap();
    assert_eq!(code(&t.send(p1).await), "00");
    assert_eq!(
        balance_of(&h, &mut t, NO_PIN).await,
        start - 3_000,
        "the hold reduces what is available"
    );
    assert_eq!(
        code(
            &{
                let m = preauth(&mut t, "000000003000");
                t.send(m)
            }
            .await
        ),
        "51",
        "held funds are not available twice"
    );
    let o = original(&t, p1_stan);
    let completion = t.request(
        "0200",
        20,
        None,
        &[
            (2, NO_PIN),
            (3, "000000"),
            (4, "000000002500"),
            (25, "06"),
            (49, "156"),
            (61, &o),
        ],
    );
    assert_eq!(code(&t.send(completion).await), "00");
    assert_eq!(
        balance_of(&h, &mut t, NO_PIN).await,
        start - 2_500,
        "the remainder is released"
    );

    let p2 = preauth(&mut t, "000000001000");
    let p2_stan = p2.stan().unwrap().unwrap();
    assert_eq!(code(&t.send(p2).await), "00");
    let o = original(&t, p2_stan);
    let cancel = t.request(
        "0100",
        11,
        None,
        &[
            (2, NO_PIN),
            (3, "200000"),
            (4, "000000001000"),
            (25, "06"),
            (49, "156"),
            (61, &o),
        ],
    );
    assert_eq!(code(&t.send(cancel).await), "00");
    let again = t.request(
        "0200",
        20,
        None,
        &[
            (2, NO_PIN),
            (3, "000000"),
            (4, "000000001000"),
            (25, "06"),
            (49, "156"),
            (61, &o),
        ],
    );
    assert_eq!(
        code(&t.send(again).await),
        "12",
        "a cancelled hold cannot be completed"
    );
    assert_eq!(balance_of(&h, &mut t, NO_PIN).await, start - 2_500);
    h.assert_ledger_consistent();
}

#[tokio::test]
async fn reversals_undo_once_and_refuse_late_originals() {
    let h = Harness::start().await;
    let mut t = h.terminal().await;
    let start = balance_of(&h, &mut t, NO_PIN).await;
    let sale = t.sale(NO_PIN, 1_000, None);
    let stan = sale.stan().unwrap().unwrap();
    assert_eq!(code(&t.send(sale.clone()).await), "00");
    let mut reversal = sale.clone();
    reversal.set_mti(iso8583::Mti::new("0400").unwrap());
    reversal.set(39, "98");
    reversal.remove(62);
    reversal.remove(64);
    let sent = t.seal(reversal.clone());
    let first = t.exchange(&sent).await;
    assert_eq!((first.mti().as_str(), code(&first)), ("0410", "00"));
    let again = t.send_wire(&sent.wire).await.unwrap();
    assert_eq!(
        CUP.decode(&again).unwrap(),
        first,
        "a repeated reversal gets its first answer"
    );
    // A new reversal message for the same original changes nothing more.
    let mut second = reversal.clone();
    second.set(39, "06");
    assert_eq!(code(&t.send(second).await), "94");
    assert_eq!(balance_of(&h, &mut t, NO_PIN).await, start);

    // Reversal before its original (the terminal timed out before the host saw it).
    let late = t.sale(NO_PIN, 700, None);
    let mut early_reversal = late.clone();
    early_reversal.set_mti(iso8583::Mti::new("0400").unwrap());
    assert_eq!(code(&t.send(early_reversal).await), "25");
    assert_eq!(
        code(&t.send(late).await),
        "05",
        "a reversed original is not charged when it arrives late"
    );
    assert_eq!(balance_of(&h, &mut t, NO_PIN).await, start);
    let _ = stan;
    h.assert_ledger_consistent();
}

#[tokio::test]
async fn mac_failure_and_replayed_ksn_answer_a0() {
    let h = Harness::start().await;
    let mut t = h.terminal().await;
    let mut sent = {
        let m = t.sale(NO_PIN, 100, None);
        t.seal(m)
    };
    let last = sent.wire.len() - 1;
    sent.wire[last] ^= 1;
    sent.response_key = None;
    let r = t.exchange(&sent).await;
    assert_eq!(code(&r), "A0");
    assert!(!r.has(64), "an A0 answer carries no MAC");

    let held = {
        let m = t.sale(NO_PIN, 100, None);
        t.seal(m)
    }; // KSN n, not sent yet
    let newer = {
        let m = t.sale(NO_PIN, 100, None);
        t.seal(m)
    }; // KSN n+1
    assert_eq!(code(&t.exchange(&newer).await), "00");
    let mut replay = held;
    replay.response_key = None;
    assert_eq!(
        code(&t.exchange(&replay).await),
        "A0",
        "a KSN counter not above the last is a replay"
    );
    assert_eq!(h.journal_count(), 1);
    h.assert_ledger_consistent();
}

#[tokio::test]
async fn malformed_messages_get_30_and_the_connection_survives() {
    let h = Harness::start().await;
    let mut t = h.terminal().await;
    // MTI 0200, bitmap announcing field 2, then garbage.
    let reply = t
        .send_wire(&[0x02, 0x00, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x99, 0x12])
        .await
        .unwrap();
    let r = CUP.decode(&reply).unwrap();
    assert_eq!((r.mti().as_str(), code(&r)), ("0210", "30"));
    // Outside the message set.
    let r = {
        let m = t.request(
            "0200",
            77,
            None,
            &[(3, "990000"), (4, "000000000100"), (49, "156")],
        );
        t.send(m)
    }
    .await;
    assert_eq!(code(&r), "12");
    // Missing currency.
    let mut no_currency = t.sale(NO_PIN, 100, None);
    no_currency.remove(49);
    assert_eq!(code(&t.send(no_currency).await), "30");
    // Still serving.
    let r = {
        let m = t.request("0820", 0, Some(301), &[]);
        t.send_plain(m)
    }
    .await;
    assert_eq!(code(&r), "00");
}

#[tokio::test]
async fn identity_is_checked_on_every_message_and_at_the_handshake() {
    let h = Harness::start().await;
    let mut t = h.terminal().await;
    let mut other = t.request("0820", 0, Some(301), &[]);
    other.set(41, "T0000002");
    let wire = CUP.encode(&other).unwrap();
    assert!(
        t.send_wire(&wire).await.is_none(),
        "a field 41 that differs from the certificate closes the connection"
    );

    // Oversized frame: closed before the body is read.
    let mut t = h.terminal().await;
    use tokio::io::AsyncWriteExt;
    t.framed
        .get_mut()
        .write_all(&[0xFF, 0xFF, 0x60])
        .await
        .unwrap();
    t.framed.get_mut().flush().await.unwrap();
    assert!(
        {
            let m = CUP.encode(&t.request("0820", 0, Some(301), &[])).unwrap();
            t.send_wire(&m).await
        }
        .is_none()
    );

    // Another deployment's certificate never gets application data.
    let other_dir = tempfile::tempdir().unwrap();
    let other = pki::Deployment::init(
        other_dir.path(),
        &pki::MasterKey::generate(),
        &Default::default(),
    )
    .unwrap();
    let cert = other
        .issue_terminal_certificate(TERMINAL, MERCHANT)
        .unwrap();
    let mut bundle = h.bundle.clone();
    bundle.cert_pem = cert.cert_pem;
    bundle.key_pem = String::from_utf8(cert.key_pem.expose().to_vec()).unwrap();
    let refused =
        match TestTerminal::connect(h.addr(), &bundle, h.data.deployment.ktk().expose()).await {
            Err(_) => true,
            Ok(mut t) => {
                let m = CUP.encode(&t.request("0820", 0, Some(301), &[])).unwrap();
                t.send_wire(&m).await
            }
            .is_none(),
        };
    assert!(refused);

    // A revoked terminal is refused at the handshake.
    h.data
        .ledger
        .submit(|tx| host::admin::set_terminal_status(tx, TERMINAL, "revoked"))
        .await
        .unwrap();
    let refused = match h.terminal_result().await {
        Err(_) => true,
        Ok(mut t) => {
            let m = CUP.encode(&t.request("0820", 0, Some(301), &[])).unwrap();
            t.send_wire(&m).await
        }
        .is_none(),
    };
    assert!(refused);
}

#[tokio::test]
async fn settlement_balanced_and_unbalanced_with_batch_upload() {
    let h = Harness::start().await;
    let mut t = h.terminal().await;
    assert_eq!(
        code(
            &{
                let m = t.sale(NO_PIN, 1_000, None);
                t.send(m)
            }
            .await
        ),
        "00"
    );
    assert_eq!(
        code(
            &{
                let m = t.sale(NO_PIN, 500, None);
                t.send(m)
            }
            .await
        ),
        "00"
    );
    assert_eq!(
        code(
            &{
                let m = t.sale(NO_PIN, 99_999, None);
                t.send(m)
            }
            .await
        ),
        "61",
        "declines are not in the totals"
    );
    let settle = |t: &mut TestTerminal, totals: &str| {
        t.request("0500", 0, Some(201), &[(48, totals), (49, "156")])
    };
    let r = {
        let m = settle(&mut t, "000000001500002000000000000000");
        t.send(m)
    }
    .await;
    assert_eq!((r.mti().as_str(), code(&r)), ("0510", "00"));
    assert_eq!(r.get_str(48).unwrap().chars().last(), Some('1'), "balanced");
    let r = {
        let m = settle(&mut t, "000000001000001000000000000000");
        t.send(m)
    }
    .await;
    assert_eq!(
        r.get_str(48).unwrap().chars().last(),
        Some('2'),
        "not balanced"
    );
    for _ in 0..2 {
        let r = {
            let m = t.request(
                "0320",
                0,
                Some(201),
                &[(2, NO_PIN), (4, "000000001000"), (49, "156")],
            );
            t.send(m)
        }
        .await;
        assert_eq!((r.mti().as_str(), code(&r)), ("0330", "00"));
    }
    let r = {
        let m = t.request("0320", 0, Some(202), &[(49, "156")]);
        t.send(m)
    }
    .await;
    assert_eq!(code(&r), "00");
    let conn = h.data.reader().unwrap();
    let (uploaded, closed): (i64, Option<i64>) = conn
        .query_row(
            "SELECT uploaded, closed_at FROM settlements ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(uploaded, 2);
    assert!(closed.is_some());
    let mut reader =
        ledger::SqliteReader::open(h.dir.path().join("host").join(host::runtime::DB_FILE)).unwrap();
    assert!(reader.check_invariants().unwrap().is_consistent());
}

#[tokio::test]
async fn settlement_charges_the_merchant_discount_once() {
    let h = Harness::start().await;
    h.data
        .ledger
        .submit(|tx| {
            tx.sql().execute(
                "UPDATE merchants SET fee_bps = 150 WHERE merchant_id = ?1",
                [MERCHANT],
            )
        })
        .await
        .unwrap();
    let mut t = h.terminal().await;
    assert_eq!(
        code(&{
            let m = t.sale(NO_PIN, 2_000, None);
            t.send(m).await
        }),
        "00"
    );
    assert_eq!(
        code(&{
            let m = t.sale(NO_PIN, 1_000, None);
            t.send(m).await
        }),
        "00"
    );
    let merchant = host::flows::merchant_account(MERCHANT);
    let fee = host::issuer::account_id("fee", "156");
    let read = |id| {
        let mut reader =
            ledger::SqliteReader::open(h.dir.path().join("host").join(host::runtime::DB_FILE))
                .unwrap();
        reader
            .balances(id)
            .unwrap()
            .map(|b| b.net_posted())
            .unwrap_or(0)
    };
    assert_eq!(
        read(merchant),
        3_000,
        "owed to the merchant before settlement"
    );
    for _ in 0..2 {
        let m = t.request(
            "0500",
            0,
            Some(201),
            &[(48, "000000003000002000000000000000"), (49, "156")],
        );
        let r = t.send(m).await;
        assert_eq!(r.get_str(48).unwrap().chars().last(), Some('1'));
    }
    assert_eq!(read(fee), 45, "1.50 % of 30.00, charged once for the batch");
    assert_eq!(read(merchant), 3_000 - 45);
    h.assert_ledger_consistent();
}

#[tokio::test]
async fn uncompleted_preauthorizations_expire_once() {
    let h = Harness::start().await;
    let mut t = h.terminal().await;
    let start = balance_of(&h, &mut t, NO_PIN).await;
    let hold = t.request(
        "0100",
        10,
        None,
        &[
            (2, NO_PIN),
            (3, "030000"),
            (4, "000000002000"),
            (25, "06"),
            (49, "156"),
        ],
    );
    assert_eq!(code(&t.send(hold).await), "00");
    let fresh = t.request(
        "0100",
        10,
        None,
        &[
            (2, NO_PIN),
            (3, "030000"),
            (4, "000000000500"),
            (25, "06"),
            (49, "156"),
        ],
    );
    assert_eq!(code(&t.send(fresh).await), "00");
    assert_eq!(balance_of(&h, &mut t, NO_PIN).await, start - 2_500);
    // The first hold is eight days old; the second is not.
    h.data
        .ledger
        .submit(|tx| tx.sql().execute("UPDATE journal SET created_at = created_at - 8 * 86400 WHERE kind = 'preauth' AND amount = 2000", []))
        .await
        .unwrap();
    let now = host::time::Now::system().unix;
    let week = 7 * 86_400;
    assert_eq!(
        h.data
            .ledger
            .submit(move |tx| host::expiry::sweep(tx, now, week))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        h.data
            .ledger
            .submit(move |tx| host::expiry::sweep(tx, now, week))
            .await
            .unwrap(),
        0,
        "once"
    );
    assert_eq!(
        balance_of(&h, &mut t, NO_PIN).await,
        start - 500,
        "the old hold is released, the new one stays"
    );
    let conn = h.data.reader().unwrap();
    let expired: i64 = conn
        .query_row(
            "SELECT count(*) FROM journal WHERE state = 'expired'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let events: i64 = conn
        .query_row(
            "SELECT count(*) FROM outbox WHERE event_id LIKE 'expire-%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!((expired, events), (1, 1));
    h.assert_ledger_consistent();
}
