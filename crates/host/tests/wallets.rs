//! Wallet payments by payment code against a real host over mutual TLS:
//! a code pays once, an expired, forged or unknown one is refused, the
//! wallet's balance is checked, refunds and reversals go back to the
//! wallet, settlement counts wallet payments like card payments, and the
//! journal and the merchant's events say `wallet`.

mod common;

use common::*;
use host::admin::{self, WalletSecret, WalletSpec};
use iso8583::Message;
use loadgen::Card;
use paycrypto::paycode::{PaymentCode, WalletNumber};

const RICH: &str = "100000001";
const POOR: &str = "100000002";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Adds a wallet holding `balance`; returns its secret.
async fn add_wallet(h: &Harness, number: &str, balance: u64) -> WalletSecret {
    let spec = WalletSpec {
        number: number.into(),
        balance,
        per_txn_limit: 50_000,
        daily_limit: 80_000,
        currency: CNY,
        holder: "test".into(),
    };
    let master = h.data.master.clone();
    h.data
        .ledger
        .submit(move |tx| admin::add_wallet(tx, &spec, &master, 0))
        .await
        .unwrap()
        .expect("a new wallet gives its secret")
}

fn code_at(number: &str, secret: &WalletSecret, unix: u64) -> PaymentCode {
    WalletNumber::parse(number)
        .unwrap()
        .code_at(secret.expose(), unix)
        .unwrap()
}

/// A message carrying `code` in field 2 as a scanned payment code (22 = 032).
fn scanned(mut m: Message) -> Message {
    m.set(22, "032");
    m
}

fn as_card(code: &str) -> Card {
    Card {
        pan: code.into(),
        expiry: None,
        pin: None,
    }
}

fn wallet_sale(t: &mut TestTerminal, code: &str, amount: u64) -> Message {
    scanned(t.sim.sale(&as_card(code), amount, CNY).unwrap())
}

async fn balance(h: &Harness, number: &str) -> u64 {
    let number = number.to_string();
    h.data
        .ledger
        .submit(admin::list_wallets)
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.number == number)
        .expect("listed")
        .balance
}

fn methods(h: &Harness) -> Vec<(String, String, String)> {
    let conn = h.data.reader().unwrap();
    let mut stmt = conn
        .prepare("SELECT kind, response_code, method FROM journal ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn a_payment_code_pays_once_and_refunds_and_reversals_go_back_to_the_wallet() {
    let h = Harness::start().await;
    let secret = add_wallet(&h, RICH, 10_000).await;
    let mut t = h.terminal().await;

    let paid = code_at(RICH, &secret, unix_now()).to_string();
    let sale = wallet_sale(&mut t, &paid, 2_500);
    let sale_stan = sale.stan().unwrap().unwrap();
    assert_eq!(code(&t.send(sale).await), "00");
    assert_eq!(balance(&h, RICH).await, 7_500);

    let again = wallet_sale(&mut t, &paid, 100);
    assert_eq!(code(&t.send(again).await), "94", "a code pays once");
    assert_eq!(balance(&h, RICH).await, 7_500);

    // A refund names its sale; the terminal scans a code again for it.
    let refund = scanned(
        t.sim
            .refund(&as_card(&paid), 1_000, CNY, t.batch, sale_stan, "0101")
            .unwrap(),
    );
    assert_eq!(code(&t.send(refund).await), "00");
    assert_eq!(balance(&h, RICH).await, 8_500);

    // The next step's code pays; its reversal puts the money back.
    let next = code_at(RICH, &secret, unix_now() + 30).to_string();
    let sale = wallet_sale(&mut t, &next, 4_000);
    assert_eq!(code(&t.send(sale.clone()).await), "00");
    assert_eq!(balance(&h, RICH).await, 4_500);
    let reversal = t.sim.reversal(&sale, "98");
    assert_eq!(code(&t.send(reversal).await), "00");
    assert_eq!(balance(&h, RICH).await, 8_500);

    let journal = methods(&h);
    assert_eq!(
        journal,
        [
            ("sale", "00", "wallet"),
            ("sale", "94", "wallet"),
            ("refund", "00", "wallet"),
            ("sale", "00", "wallet"),
            ("reversal", "00", "wallet"),
        ]
        .map(|(k, c, m)| (k.to_string(), c.to_string(), m.to_string()))
    );
    // Settlement counts the wallet's sale (refunded) and its refund; the
    // declined and the reversed sales are out of the totals.
    let settle = t.request(
        "0500",
        0,
        Some(201),
        &[(48, "000000002500001000000001000001"), (49, "156")],
    );
    let settled = t.send(settle).await;
    assert_eq!(code(&settled), "00");
    assert_eq!(
        settled.get_str(48).unwrap().chars().last(),
        Some('1'),
        "balanced"
    );

    let conn = h.data.reader().unwrap();
    let payload: String = conn
        .query_row("SELECT payload FROM outbox ORDER BY id LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(event["transaction"]["payment_method"], "wallet");
    let masked = event["transaction"]["masked_pan"].as_str().unwrap();
    assert_eq!(masked, iso8583::text::mask_pan(&paid));
    assert!(!payload.contains(&paid), "the full code is never stored");
    h.assert_ledger_consistent();
}

#[tokio::test]
async fn expired_forged_and_unknown_codes_are_refused_and_cards_still_say_card() {
    let h = Harness::start().await;
    let secret = add_wallet(&h, RICH, 10_000).await;
    let mut t = h.terminal().await;
    let now = unix_now();

    let expired = code_at(RICH, &secret, now - 120).to_string();
    let m = wallet_sale(&mut t, &expired, 100);
    assert_eq!(code(&t.send(m).await), "54", "a code two minutes old");

    let good = code_at(RICH, &secret, now).to_string();
    let last = good.as_bytes()[18] - b'0';
    let forged = format!("{}{}", &good[..18], (last + 1) % 10);
    let m = wallet_sale(&mut t, &forged, 100);
    assert_eq!(
        code(&t.send(m).await),
        "14",
        "a code that is not the wallet's"
    );

    let unknown = format!("69999999999{}", &good[11..]);
    let m = wallet_sale(&mut t, &unknown, 100);
    assert_eq!(code(&t.send(m).await), "14", "no such wallet");

    // A card number scanned as a code is not a code.
    let m = wallet_sale(&mut t, NO_PIN, 100);
    assert_eq!(code(&t.send(m).await), "14", "not a payment code");
    assert_eq!(balance(&h, RICH).await, 10_000);

    // The same card read by its chip pays as a card.
    let m = t.sale(NO_PIN, 100, None);
    assert_eq!(code(&t.send(m).await), "00");
    let journal = methods(&h);
    let by_method: Vec<&str> = journal.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(by_method, ["wallet", "wallet", "wallet", "wallet", "card"]);
    h.assert_ledger_consistent();
}

#[tokio::test]
async fn a_wallet_pays_only_what_it_holds() {
    let h = Harness::start().await;
    let secret = add_wallet(&h, POOR, 500).await;
    let mut t = h.terminal().await;
    let paid = code_at(POOR, &secret, unix_now()).to_string();
    let m = wallet_sale(&mut t, &paid, 1_000);
    assert_eq!(code(&t.send(m).await), "51");
    assert_eq!(balance(&h, POOR).await, 500);

    h.data
        .ledger
        .submit(move |tx| admin::fund_wallet(tx, WalletNumber::parse(POOR).unwrap(), 1_500))
        .await
        .unwrap();
    let next = code_at(POOR, &secret, unix_now() + 30).to_string();
    let m = wallet_sale(&mut t, &next, 1_000);
    assert_eq!(code(&t.send(m).await), "00", "after a top-up");
    assert_eq!(balance(&h, POOR).await, 1_000);

    // A wallet is created once: adding it again gives no secret.
    let spec = WalletSpec {
        number: POOR.into(),
        balance: 1,
        per_txn_limit: 1,
        daily_limit: 1,
        currency: CNY,
        holder: String::new(),
    };
    let master = h.data.master.clone();
    let again = h
        .data
        .ledger
        .submit(move |tx| admin::add_wallet(tx, &spec, &master, 0))
        .await
        .unwrap();
    assert!(again.is_none());
    h.assert_ledger_consistent();
}
