//! The engine's decisions, every path, with explicit time and no I/O.

use iso8583::{Message, Mti};
use terminal::engine::*;

fn params() -> Params {
    Params {
        merchant_name: "Corner Shop".into(),
        currency: 156,
        max_amount: 100_000,
        offline_floor: 2_000,
        offline_total_limit: 5_000,
        methods: vec![Method::Card],
        echo_interval_secs: 60,
        version: 1,
    }
}

fn card(offline: bool) -> CardData {
    CardData {
        pan: "6200000000000054".into(),
        expiry: "3012".into(),
        entry: Entry::Chip,
        offline_allowed: offline,
    }
}

fn sale(amount: u64) -> TxnRequest {
    TxnRequest {
        kind: TxnKind::Sale,
        amount,
        method: Method::Card,
        original: None,
    }
}

fn reply(code: &str) -> Reply {
    let mut m = Message::new(Mti::new("0210").unwrap());
    m.set(39, code).set(37, "000000000042").set(38, "123456");
    Reply::Valid(m)
}

#[test]
fn local_refusals_come_before_any_host_traffic() {
    let p = params();
    let today = "2611";
    assert_eq!(
        route(&p, &sale(0), &card(false), true, 0, today),
        Err(Refusal::AmountOutsideLimits {
            amount: 0,
            max: 100_000
        })
    );
    assert_eq!(
        route(&p, &sale(100_001), &card(false), true, 0, today),
        Err(Refusal::AmountOutsideLimits {
            amount: 100_001,
            max: 100_000
        })
    );
    let qr = TxnRequest {
        method: Method::Qr,
        ..sale(100)
    };
    assert_eq!(
        route(&p, &qr, &card(false), true, 0, today),
        Err(Refusal::MethodNotEnabled(Method::Qr))
    );
    let expired = CardData {
        expiry: "2610".into(),
        ..card(false)
    };
    assert_eq!(
        route(&p, &sale(100), &expired, true, 0, today),
        Err(Refusal::CardExpired {
            expiry: "2610".into()
        })
    );
    assert!(
        route(
            &p,
            &sale(100),
            &CardData {
                expiry: "26X1".into(),
                ..card(false)
            },
            true,
            0,
            today
        )
        .is_err()
    );
    let void = TxnRequest {
        kind: TxnKind::Void,
        ..sale(100)
    };
    assert_eq!(
        route(&p, &void, &card(false), true, 0, today),
        Err(Refusal::OriginalRequired)
    );
    assert_eq!(
        route(&p, &sale(100), &card(false), true, 0, today),
        Ok(Route::Online)
    );
    let balance = TxnRequest {
        kind: TxnKind::Balance,
        amount: 0,
        ..sale(0)
    };
    assert_eq!(
        route(&p, &balance, &card(false), true, 0, today),
        Ok(Route::Online)
    );
}

#[test]
fn offline_only_for_sales_the_card_and_the_limits_allow() {
    let p = params();
    let today = "2611";
    assert_eq!(
        route(&p, &sale(2_000), &card(true), false, 0, today),
        Ok(Route::Offline)
    );
    assert!(
        matches!(
            route(&p, &sale(2_001), &card(true), false, 0, today),
            Err(Refusal::HostUnreachable(_))
        ),
        "over the floor"
    );
    assert!(
        matches!(
            route(&p, &sale(100), &card(false), false, 0, today),
            Err(Refusal::HostUnreachable(_))
        ),
        "card needs online"
    );
    assert!(
        matches!(
            route(&p, &sale(1_500), &card(true), false, 4_000, today),
            Err(Refusal::HostUnreachable(_))
        ),
        "offline total"
    );
    let refund = TxnRequest {
        kind: TxnKind::Refund,
        original: Some((1, 1)),
        ..sale(100)
    };
    assert!(matches!(
        route(&p, &refund, &card(true), false, 0, today),
        Err(Refusal::HostUnreachable(_))
    ));
    let no_offline = Params {
        offline_floor: 0,
        offline_total_limit: 0,
        ..params()
    };
    assert!(route(&no_offline, &sale(1), &card(true), false, 0, today).is_err());
}

#[test]
fn an_answer_ends_the_exchange_definitely() {
    let mut x = Exchange::new(1_000, 15_000);
    let step = x.on_reply(reply("00")).unwrap();
    assert_eq!(
        step.outcome,
        Outcome::Approved {
            auth_code: "123456".into(),
            rrn: "000000000042".into()
        }
    );
    assert_eq!(step.reversal, ReversalAction::Discard);
    assert_eq!(x.on_tick(1_000_000), None, "nothing after the end");
    assert_eq!(x.on_reply(reply("05")), None);

    for (code, why) in [
        ("51", "insufficient funds"),
        ("55", "incorrect PIN"),
        ("05", "do not honour"),
    ] {
        let step = Exchange::new(0, 10).on_reply(reply(code)).unwrap();
        assert_eq!(
            step.outcome,
            Outcome::Declined {
                code: code.into(),
                reason: why
            }
        );
        assert_eq!(
            (step.reversal, step.sign_on),
            (ReversalAction::Discard, false)
        );
    }
    let step = Exchange::new(0, 10).on_reply(reply("A0")).unwrap();
    assert!(step.sign_on, "A0 makes the terminal sign on again");
}

#[test]
fn no_answer_means_reversed_never_unknown() {
    let mut x = Exchange::new(1_000, 15_000);
    assert_eq!(x.deadline_ms(), 16_000);
    assert_eq!(x.on_tick(15_999), None);
    let step = x.on_tick(16_000).unwrap();
    assert!(matches!(step.outcome, Outcome::Reversed { .. }));
    assert_eq!(step.reversal, ReversalAction::Keep);
    assert_eq!(
        x.on_reply(reply("00")),
        None,
        "a late approval does not undo the reversal"
    );

    let step = Exchange::new(0, 10).on_link_lost().unwrap();
    assert_eq!(
        (step.outcome.state(), step.reversal),
        ("reversed", ReversalAction::Keep)
    );
    let step = Exchange::new(0, 10)
        .on_reply(Reply::Invalid("answer MAC does not verify".into()))
        .unwrap();
    assert_eq!(
        (step.outcome.state(), step.reversal),
        ("reversed", ReversalAction::Keep)
    );
}

#[test]
fn reversals_go_before_advices_oldest_first() {
    let items = vec![
        SafItem {
            id: 3,
            kind: SafKind::Advice,
        },
        SafItem {
            id: 5,
            kind: SafKind::Reversal,
        },
        SafItem {
            id: 1,
            kind: SafKind::Advice,
        },
        SafItem {
            id: 4,
            kind: SafKind::Reversal,
        },
    ];
    assert_eq!(
        next_saf(&items),
        Some(&SafItem {
            id: 4,
            kind: SafKind::Reversal
        })
    );
    let advices: Vec<_> = items
        .iter()
        .filter(|i| i.kind == SafKind::Advice)
        .cloned()
        .collect();
    assert_eq!(
        next_saf(&advices),
        Some(&SafItem {
            id: 1,
            kind: SafKind::Advice
        })
    );
    assert_eq!(next_saf(&[]), None);
}

#[test]
fn stored_messages_are_done_on_any_deliberate_answer() {
    assert_eq!(saf_ack(&reply("00")), SafAck::Done);
    assert_eq!(
        saf_ack(&reply("25")),
        SafAck::Done,
        "a reversal whose original never arrived"
    );
    assert_eq!(saf_ack(&reply("94")), SafAck::Done);
    assert_eq!(saf_ack(&reply("A0")), SafAck::SignOnThenRetry);
    assert_eq!(saf_ack(&reply("96")), SafAck::Retry);
    assert_eq!(saf_ack(&Reply::Invalid("x".into())), SafAck::Retry);
}

#[test]
fn parameters_and_totals() {
    let mut tlv = Vec::new();
    for (t, v) in [
        (iso8583::params::MERCHANT_NAME, "Corner Shop"),
        (iso8583::params::CURRENCY, "156"),
        (iso8583::params::MAX_AMOUNT, "100000"),
        (iso8583::params::OFFLINE_FLOOR, "2000"),
        (iso8583::params::VERSION, "1"),
        (iso8583::params::ECHO_INTERVAL, "60"),
        (iso8583::params::METHODS, "card"),
    ] {
        iso8583::tlv::write(t, v.as_bytes(), &mut tlv);
    }
    assert_eq!(
        Params::from_tlv(&tlv).unwrap(),
        Params {
            offline_total_limit: 20_000,
            ..params()
        }
    );
    assert!(Params::from_tlv(&tlv[..10]).is_err());
    let totals = Totals {
        debit_amount: 1_500,
        debit_count: 2,
        credit_amount: 300,
        credit_count: 1,
    };
    assert_eq!(totals.field48(), "000000001500002000000000300001");
    let mut m = Message::new(Mti::new("0510").unwrap());
    m.set(48, "0000000015000020000000003000011");
    assert_eq!(settlement_balanced(&m), Some(true));
    m.set(48, "0000000015000020000000003000012");
    assert_eq!(settlement_balanced(&m), Some(false));
}
