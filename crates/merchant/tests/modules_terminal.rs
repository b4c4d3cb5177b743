//! Orders paid from the back office through a real posnet terminal (its
//! nexo endpoint over TLS, pinned) in front of a real posnet host over
//! mutual TLS, whose webhooks reach the back office: a table's bill split
//! in two paid by two approved payments, linked to the host's
//! transactions; a shop sale paid (stock taken) and one declined (the
//! terminal's reason shown, the stock left); a lost answer learnt with
//! `TransactionStatus` without a second charge; a payment left pending by
//! a back office that stopped, settled by asking the terminal.

mod modules_common;

use host::admin::MerchantSpec;
use host::runtime::MerchantServices;
use merchant::modules::orders::{PaymentStatus, Status};
use merchant::users::Role;
use modules_common::{Office, SECRET, Session, order_id};
use std::time::Duration;
use terminal::ecr::EcrConfig;
use terminal::ecr::server::ServerOptions;
use testbed::TID;

/// A host (with its webhook worker pointed at `office`), a terminal signed
/// on to it, and the terminal's nexo endpoint, all on loopback.
struct World {
    bed: testbed::World,
}

impl World {
    /// The simulated reader presents test card `card` to every payment
    /// (none: a card is presented when the test says so).
    async fn start(office: &Office, card: Option<&str>) -> World {
        let merchant = MerchantSpec {
            webhook_url: Some(format!("{}/webhooks/host", office.base)),
            webhook_secret: Some(SECRET.into()),
            ..testbed::corner_shop()
        };
        let services = MerchantServices {
            api_listen: "127.0.0.1:0".parse().unwrap(),
            outbox: host::outbox::OutboxConfig {
                poll_interval: Duration::from_millis(50),
                backoff_base: Duration::from_millis(20),
                backoff_cap: Duration::from_millis(200),
                ..Default::default()
            },
        };
        let config = EcrConfig {
            present_card: card.map(|c| terminal::card::test_card_named(c).expect("a catalog card")),
            ..EcrConfig::default()
        };
        World {
            bed: testbed::World::start(merchant, Some(&services), config, ServerOptions::default())
                .await,
        }
    }

    /// Pairs the back office with the terminal, as `posnet merchant
    /// terminal pair` does; returns the terminal's POIID.
    fn pair(&self, office: &Office) -> String {
        let code = self.bed.ecr.ecr.pair("back office").unwrap().to_code();
        let paired =
            merchant::modules::payments::pair(office.store(), office.data_dir(), &code, "cli")
                .unwrap();
        paired.poi_id
    }

    /// `(amount, state)` of the host's sales, oldest first.
    fn host_sales(&self) -> Vec<(i64, String)> {
        let conn = self.bed.host.data.reader().unwrap();
        let mut stmt = conn
            .prepare("SELECT amount, state FROM journal WHERE kind = 'sale' ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// Pays order `order` (its part `part`) on `terminal` as the Pay button
/// does, and follows the payment's status page until it has ended; the
/// page's last text.
async fn pay(
    office: &Office,
    s: &Session,
    order: i64,
    part: Option<&str>,
    terminal: &str,
) -> String {
    let mut form = vec![("terminal", terminal)];
    if let Some(part) = part {
        form.push(("part", part));
    }
    let to = office
        .submit(s, &format!("/orders/{order}/pay"), &form)
        .await;
    let ended = settled(office, s, &to).await;
    assert!(ended.contains(&format!("/orders/{order}")), "{ended}");
    ended
}

/// The status page at `location` (`/payments/<id>`) once the payment has
/// ended: the page no longer reloads itself. Bounded by a safety net.
async fn settled(office: &Office, s: &Session, location: &str) -> String {
    assert!(location.starts_with("/payments/"), "{location}");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let page = office.page(s, location).await;
            if !page.contains("http-equiv=\"refresh\"") {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the payment ends within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_bill_split_in_two_is_paid_by_two_approved_payments_and_frees_the_table() {
    let office = Office::start().await;
    let world = World::start(&office, Some("approved")).await;
    let poi = world.pair(&office);
    let listed = office
        .page(&office.session("ada", Role::Auditor), "/terminals")
        .await;
    assert!(listed.contains(&poi), "{listed}");
    office.seed();
    let cashier = office.session("carl", Role::Cashier);

    // Table 5: noodles twice and a pot of tea, split in two equal parts.
    let table: i64 = office.count("SELECT id FROM restaurant_tables WHERE name = '5'");
    let order = order_id(
        &office
            .submit(&cashier, &format!("/tables/{table}/open"), &[])
            .await,
    );
    for (code, quantity) in [("MENU-NOODLES", "2"), ("MENU-TEA", "1")] {
        let item = office.item(code).to_string();
        office
            .submit(
                &cashier,
                &format!("/orders/{order}/lines"),
                &[("item", &item), ("quantity", quantity)],
            )
            .await;
    }
    office
        .submit(
            &cashier,
            &format!("/orders/{order}/split"),
            &[("mode", "equal"), ("parts", "2")],
        )
        .await;
    let page = office.page(&cashier, &format!("/orders/{order}")).await;
    assert!(
        page.contains("Pay part 1 — 45.50 CNY") && page.contains("Pay part 2 — 45.50 CNY"),
        "{page}"
    );

    pay(&office, &cashier, order, Some("1"), &poi).await;
    let d = office.order(order);
    assert_eq!(d.order.status, Status::PartlyPaid);
    assert_eq!(d.order.paid, 4_550);
    let tables = office.page(&cashier, "/tables").await;
    assert!(
        tables.contains(&format!("/orders/{order}")),
        "still occupied"
    );

    pay(&office, &cashier, order, Some("2"), &poi).await;
    let d = office.order(order);
    assert_eq!(d.order.status, Status::Paid);
    assert_eq!(d.order.paid, 9_100);
    assert!(d.parts.iter().all(|p| p.paid));
    assert_eq!(d.payments.len(), 2);
    for p in &d.payments {
        assert_eq!(p.status, PaymentStatus::Approved, "{p:?}");
        assert_eq!(p.amount, 4_550);
        assert_eq!(p.acquirer_terminal_id.as_deref(), Some(TID));
        assert!(p.poi_transaction_id.is_some() && p.approval_code.is_some() && p.rrn.is_some());
        assert!(p.masked_pan.as_deref().unwrap().contains("******"));
    }
    assert_eq!(
        world.host_sales(),
        [
            (4_550, "approved".to_string()),
            (4_550, "approved".to_string())
        ],
        "two payments at the host, each once"
    );
    let tables = office.page(&cashier, "/tables").await;
    assert!(
        !tables.contains(&format!("/orders/{order}")),
        "table 5 is free: {tables}"
    );

    // The host's webhooks arrive: each payment is linked to its transaction,
    // the same terminal, batch and trace number.
    eventually("both payments linked to the host's transactions", || {
        office.count("SELECT count(*) FROM order_payments WHERE host_transaction_id IS NOT NULL")
            == 2
    })
    .await;
    let unmatched = office.count(
        "SELECT count(*) FROM order_payments p JOIN transactions t ON t.id = p.host_transaction_id
         WHERE t.terminal_id != p.acquirer_terminal_id OR t.batch != p.batch OR t.stan != p.stan
            OR t.amount != p.amount OR t.rrn != p.rrn",
    );
    assert_eq!(unmatched, 0);
    let page = office.page(&cashier, &format!("/orders/{order}")).await;
    assert!(
        page.contains("/transactions/"),
        "the order links the host's record"
    );

    // A shop sale paid whole: its counted items leave the stock.
    let sale = order_id(
        &office
            .submit(&cashier, "/retail/sales", &[("barcode", "6901234567908")])
            .await,
    );
    assert_eq!(office.stock("SKU-MUG-01"), 12);
    pay(&office, &cashier, sale, None, &poi).await;
    assert_eq!(office.order(sale).order.status, Status::Paid);
    assert_eq!(office.stock("SKU-MUG-01"), 11);
    // Paid, it cannot be paid again.
    office
        .refused(
            &cashier,
            &format!("/orders/{sale}/pay"),
            &[("terminal", &poi)],
            reqwest::StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(world.host_sales().len(), 3);
    for action in ["payment.start", "payment.approved", "order.payment"] {
        assert_eq!(
            office.count(&format!(
                "SELECT count(*) FROM audit_log WHERE action = '{action}'"
            )),
            3,
            "{action}"
        );
    }
    let verification = office.store().read(merchant::audit::verify).unwrap();
    assert!(verification.broken.is_none(), "{verification:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_leaves_the_order_open_with_the_reason_and_the_stock() {
    let office = Office::start().await;
    // This card holds 5.00: the issuer declines more.
    let world = World::start(&office, Some("insufficient_funds")).await;
    let poi = world.pair(&office);
    office.seed();
    let cashier = office.session("carl", Role::Cashier);
    let sale = order_id(
        &office
            .submit(&cashier, "/retail/sales", &[("barcode", "6901234567915")])
            .await,
    );
    pay(&office, &cashier, sale, None, &poi).await;
    let d = office.order(sale);
    assert_eq!(d.order.status, Status::Open);
    assert_eq!(d.order.paid, 0);
    assert_eq!(d.payments.len(), 1);
    let declined = &d.payments[0];
    assert_eq!(declined.status, PaymentStatus::Declined);
    let reason = declined.reason.as_deref().unwrap();
    assert!(reason.contains("insufficient funds"), "{reason}");
    assert_eq!(office.stock("SKU-HONEY-250"), 3, "the stock is left");
    let page = office.page(&cashier, &format!("/orders/{sale}")).await;
    assert!(
        page.contains("insufficient funds"),
        "the terminal's reason is shown"
    );
    assert!(
        page.contains("Pay 28.80 CNY"),
        "and the order can be paid another way"
    );
    assert_eq!(world.host_sales(), [(2_880, "declined".to_string())]);
    // The host's record of the decline is not a payment of the order.
    eventually("the decline recorded from the host's webhook", || {
        office.count("SELECT count(*) FROM transactions") == 1
    })
    .await;
    assert_eq!(
        office.count("SELECT count(*) FROM order_payments WHERE host_transaction_id IS NOT NULL"),
        0
    );

    // Unpaired, the terminal is no longer offered; both changes audited.
    merchant::modules::payments::unpair(office.store(), office.data_dir(), &poi, "cli").unwrap();
    assert!(
        merchant::modules::payments::terminals(office.data_dir())
            .unwrap()
            .is_empty()
    );
    let page = office.page(&cashier, &format!("/orders/{sale}")).await;
    assert!(page.contains("No terminal is paired"), "{page}");
    assert_eq!(
        office.count(
            "SELECT count(*) FROM audit_log WHERE action IN ('terminal.pair', 'terminal.unpair')"
        ),
        2
    );
}

/// Waits (bounded) until the terminal's display starts with `text`.
async fn display(world: &World, text: &str) {
    world
        .bed
        .terminal
        .wait(&format!("the terminal never showed {text:?}"), |s| {
            s.display.starts_with(text)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_learnt_from_the_terminal_and_the_card_charged_once() {
    let office = Office::start().await;
    let world = World::start(&office, None).await;
    let poi = world.pair(&office);
    // The back office reaches the terminal through a proxy that will
    // swallow the terminal's answer and cut the connection.
    let proxy = netfault::Proxy::start(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        world.bed.ecr.ecr.endpoint().unwrap().port,
    )))
    .await
    .unwrap();
    let pairings = phone::store::PairingStore::new(&merchant::modules::payments::terminals_dir(
        office.data_dir(),
    ));
    let mut pairing = pairings.get(Some(&poi)).unwrap();
    pairing.port = proxy.addr.port();
    pairings
        .add(&pairing, true, &phone::timestamp_now())
        .unwrap();
    office.seed();
    let cashier = office.session("carl", Role::Cashier);
    let sale = order_id(
        &office
            .submit(&cashier, "/retail/sales", &[("barcode", "6901234567892")])
            .await,
    );
    let paying = office
        .client
        .post(office.url(&format!("/orders/{sale}/pay")))
        .header(
            reqwest::header::COOKIE,
            format!("posnet_session={}", cashier.token),
        )
        .form(&[("terminal", poi.as_str()), ("csrf", cashier.csrf.as_str())])
        .send();
    let answered = paying.await.unwrap();
    assert_eq!(answered.status(), reqwest::StatusCode::SEE_OTHER);
    let status = answered.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    display(&world, "Present card").await;
    // The payment's request went on the newest connection (the progress
    // WebSocket was opened before it): its answer is lost.
    proxy.cut_next_answer_on_newest();
    world.bed.ecr.ecr.present_card("approved").unwrap();
    let ended = settled(&office, &cashier, &status).await;
    assert!(ended.contains("the answer was lost"), "{ended}");

    let d = office.order(sale);
    assert_eq!(d.order.status, Status::Paid);
    let p = &d.payments[0];
    assert_eq!(p.status, PaymentStatus::Approved);
    let reason = p.reason.as_deref().unwrap();
    assert!(reason.starts_with("the answer was lost"), "{reason}");
    assert!(p.poi_transaction_id.is_some() && p.approval_code.is_some());
    assert_eq!(office.stock("SKU-TEA-100"), 39);
    assert_eq!(
        world.host_sales(),
        [(1_250, "approved".to_string())],
        "charged once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_left_pending_by_a_stopped_back_office_is_settled_by_asking_the_terminal() {
    let office = Office::start().await;
    let world = World::start(&office, Some("approved")).await;
    let poi = world.pair(&office);
    office.seed();
    let cashier = office.session("carl", Role::Cashier);
    let mut sales = Vec::new();
    for barcode in ["6901234567908", "6901234567922"] {
        sales.push(order_id(
            &office
                .submit(&cashier, "/retail/sales", &[("barcode", barcode)])
                .await,
        ));
    }
    // A back office that stopped mid-payment: each payment written
    // pending; the first one's request reached the terminal (the Sale
    // system's library sent it and the terminal approved it), the
    // second's never left.
    let now = merchant::store::unix_now() - 1;
    let started: Vec<merchant::modules::orders::Started> = sales
        .iter()
        .map(|sale| {
            office
                .store()
                .write(|tx| {
                    merchant::modules::orders::start_payment(tx, *sale, None, &poi, "carl", now)
                })
                .unwrap()
        })
        .collect();
    let mut phone = phone::Phone::open(phone::Options {
        terminal: Some(poi.clone()),
        progress: false,
        ..phone::Options::new(merchant::modules::payments::terminals_dir(
            office.data_dir(),
        ))
    })
    .unwrap();
    let sent = phone
        .pay(
            &phone::Money::from_minor(3_500, "CNY").unwrap(),
            &mut |_| {},
        )
        .await
        .unwrap();
    assert!(sent.succeeded(), "{}", sent.reason());
    drop(phone);

    // Pending, not under way: the page offers to ask the terminal.
    let page = office
        .page(&cashier, &format!("/orders/{}", sales[0]))
        .await;
    assert!(page.contains("Ask the terminal"), "{page}");
    office
        .refused(
            &cashier,
            &format!("/orders/{}/pay", sales[0]),
            &[("terminal", &poi)],
            reqwest::StatusCode::BAD_REQUEST,
        )
        .await;
    for s in &started {
        office
            .submit(&cashier, &format!("/payments/{}/check", s.payment_id), &[])
            .await;
    }
    let paid = office.order(sales[0]);
    assert_eq!(paid.order.status, Status::Paid);
    assert_eq!(paid.payments[0].status, PaymentStatus::Approved);
    assert_eq!(
        paid.payments[0].service_id.as_deref(),
        Some(sent.service_id.as_str())
    );
    assert_eq!(office.stock("SKU-MUG-01"), 11);
    let never = office.order(sales[1]);
    assert_eq!(never.order.status, Status::Open);
    assert_eq!(never.payments[0].status, PaymentStatus::Failed);
    assert!(
        never.payments[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("before the payment was sent")
    );
    assert_eq!(office.stock("SKU-BAG"), 500);
    assert_eq!(world.host_sales(), [(3_500, "approved".to_string())]);
    // The second can be paid now.
    pay(&office, &cashier, sales[1], None, &poi).await;
    assert_eq!(office.order(sales[1]).order.status, Status::Paid);
    assert_eq!(office.stock("SKU-BAG"), 499);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_refunds_and_reverses_paid_orders_on_their_terminal_with_its_supervisor_code() {
    use merchant::modules::refunds::Kind;
    let office = Office::start().await;
    let world = World::start(&office, Some("approved")).await;
    let poi = world.pair(&office);
    office.seed();
    let cashier = office.session("carl", Role::Cashier);
    let owner = office.session("olga", Role::Owner);
    // The terminal accepts each step's code once, one step of drift at
    // most: two codes per supervisor secret.
    let uri = world.bed.ecr.ecr.set_supervisor().unwrap();
    let supervisor = testbed::Supervisor::from_uri(&uri, TID);
    // Two shop sales paid: a mug (35.00) and green tea (12.50).
    let mut paid = Vec::new();
    for barcode in ["6901234567908", "6901234567892"] {
        let sale = order_id(
            &office
                .submit(&cashier, "/retail/sales", &[("barcode", barcode)])
                .await,
        );
        pay(&office, &cashier, sale, None, &poi).await;
        let d = office.order(sale);
        assert_eq!(d.order.status, Status::Paid);
        paid.push((sale, d.payments[0].id));
    }
    let [(mug, mug_payment), (tea, tea_payment)] = paid[..] else {
        unreachable!()
    };
    let refunds = |order| {
        office
            .store()
            .read(|c| Ok(merchant::modules::refunds::of_order(c, order)))
            .unwrap()
            .unwrap()
    };
    let refund_path = format!("/payments/{mug_payment}/refund");
    let page = office.page(&owner, &format!("/orders/{mug}")).await;
    assert!(page.contains(&refund_path), "owners see the form");
    let page = office.page(&cashier, &format!("/orders/{mug}")).await;
    assert!(!page.contains(&refund_path), "cashiers do not");
    office
        .refused(
            &cashier,
            &refund_path,
            &[("kind", "refund"), ("supervisor_code", "123456")],
            reqwest::StatusCode::FORBIDDEN,
        )
        .await;

    // A wrong code: the terminal refuses, nothing goes to the host.
    let now = testbed::Supervisor::from_uri(&uri, TID).code();
    let wrong = if now == "000000" { "111111" } else { "000000" };
    office
        .submit(
            &owner,
            &refund_path,
            &[
                ("kind", "refund"),
                ("amount", "10.00"),
                ("supervisor_code", wrong),
            ],
        )
        .await;
    let r = &refunds(mug)[0];
    assert_eq!((r.kind, r.status), (Kind::Refund, PaymentStatus::Declined));
    assert!(
        r.reason.as_deref().unwrap().contains("supervisor"),
        "{:?}",
        r.reason
    );

    // 10.00 back with the supervisor's code, then the 25.00 left.
    for amount in ["10.00", ""] {
        office
            .submit(
                &owner,
                &refund_path,
                &[
                    ("kind", "refund"),
                    ("amount", amount),
                    ("supervisor_code", &supervisor.code()),
                ],
            )
            .await;
    }
    let done: Vec<(PaymentStatus, i64)> = refunds(mug)
        .iter()
        .skip(1)
        .map(|r| (r.status, r.amount))
        .collect();
    assert_eq!(
        done,
        [
            (PaymentStatus::Approved, 1_000),
            (PaymentStatus::Approved, 2_500)
        ],
        "{:?}",
        refunds(mug)
    );
    // Nothing is left to refund, and a refunded payment is not reversed.
    for kind in ["refund", "reversal"] {
        let refused = office
            .refused(
                &owner,
                &refund_path,
                &[("kind", kind), ("supervisor_code", "123456")],
                reqwest::StatusCode::BAD_REQUEST,
            )
            .await;
        assert!(
            refused.contains("refunded in full") || refused.contains("partly refunded"),
            "{refused}"
        );
    }

    // The tea, paid today, is reversed whole (under a new secret).
    let supervisor =
        testbed::Supervisor::from_uri(&world.bed.ecr.ecr.set_supervisor().unwrap(), TID);
    office
        .submit(
            &owner,
            &format!("/payments/{tea_payment}/refund"),
            &[
                ("kind", "reversal"),
                ("supervisor_code", &supervisor.code()),
            ],
        )
        .await;
    let r = &refunds(tea)[0];
    assert_eq!(
        (r.kind, r.status, r.amount),
        (Kind::Reversal, PaymentStatus::Approved, 1_250),
        "{:?}",
        r.reason
    );
    let page = office.page(&owner, &format!("/orders/{tea}")).await;
    assert!(
        page.contains("Refunds and reversals") && page.contains("reversal"),
        "{page}"
    );

    // The host has both refunds and the voided sale.
    let conn = world.bed.host.data.reader().unwrap();
    let mut stmt = conn
        .prepare("SELECT kind, amount FROM journal WHERE kind != 'sale' ORDER BY id")
        .unwrap();
    let others: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        others
            .iter()
            .filter(|(k, _)| k == "refund")
            .map(|(_, a)| *a)
            .collect::<Vec<_>>(),
        [1_000, 2_500],
        "{others:?}"
    );
    assert_eq!(
        others.iter().filter(|(k, _)| k != "refund").count(),
        1,
        "{others:?}"
    );
    for (action, n) in [
        ("refund.start", 3),
        ("refund.declined", 1),
        ("refund.approved", 2),
        ("reversal.start", 1),
        ("reversal.approved", 1),
    ] {
        assert_eq!(
            office.count(&format!(
                "SELECT count(*) FROM audit_log WHERE action = '{action}' AND actor = 'olga'"
            )),
            n,
            "{action}"
        );
    }

    // A refund whose answer the back office lost: its Sale system sent it
    // and the terminal made it, but it is recorded unknown. Ask the
    // terminal learns it, without a second refund.
    let bag = order_id(
        &office
            .submit(&cashier, "/retail/sales", &[("barcode", "6901234567922")])
            .await,
    );
    pay(&office, &cashier, bag, None, &poi).await;
    let bag_payment = office.order(bag).payments[0].clone();
    let now = merchant::store::unix_now();
    let started = office
        .store()
        .write(|tx| {
            merchant::modules::refunds::start(tx, bag_payment.id, Kind::Refund, None, "olga", now)
        })
        .unwrap();
    let supervisor =
        testbed::Supervisor::from_uri(&world.bed.ecr.ecr.set_supervisor().unwrap(), TID);
    let mut phone = phone::Phone::open(phone::Options {
        terminal: Some(poi.clone()),
        progress: false,
        ..phone::Options::new(merchant::modules::payments::terminals_dir(
            office.data_dir(),
        ))
    })
    .unwrap();
    let sent = phone
        .refund(
            &phone::Money::from_minor(50, "CNY").unwrap(),
            bag_payment.poi_transaction_id.as_deref().unwrap(),
            None,
            &phone::SupervisorCode::new(&supervisor.code()).unwrap(),
            &mut |_| {},
        )
        .await
        .unwrap();
    assert!(sent.succeeded(), "{}", sent.reason());
    drop(phone);
    office
        .store()
        .write(|tx| {
            merchant::modules::refunds::record(
                tx,
                started.refund_id,
                &merchant::modules::orders::Outcome {
                    status: Some(PaymentStatus::Unknown),
                    service_id: Some(sent.service_id.clone()),
                    ..Default::default()
                },
                "olga",
                now,
            )
        })
        .unwrap();
    let check = format!("/refunds/{}/check", started.refund_id);
    let page = office.page(&owner, &format!("/orders/{bag}")).await;
    assert!(page.contains(&check), "{page}");
    office.submit(&owner, &check, &[]).await;
    let r = &refunds(bag)[0];
    assert_eq!(r.status, PaymentStatus::Approved, "{:?}", r.reason);
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("learnt from the terminal"),
        "{:?}",
        r.reason
    );
    let refunded: i64 = world
        .bed
        .host
        .data
        .reader()
        .unwrap()
        .query_row(
            "SELECT count(*) FROM journal WHERE kind = 'refund' AND amount = 50",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(refunded, 1, "refunded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_answers_at_once_and_its_status_page_follows_the_terminal_without_script() {
    let office = Office::start().await;
    // Cards are presented by hand here.
    let world = World::start(&office, None).await;
    let poi = world.pair(&office);
    office.seed();
    let cashier = office.session("carl", Role::Cashier);
    let sale = order_id(
        &office
            .submit(&cashier, "/retail/sales", &[("barcode", "6901234567908")])
            .await,
    );
    // The form's answer comes before any card: a redirect to the status page.
    let status = office
        .submit(
            &cashier,
            &format!("/orders/{sale}/pay"),
            &[("terminal", &poi)],
        )
        .await;
    let payment = office.order(sale).payments[0].id;
    assert_eq!(status, format!("/payments/{payment}"));
    display(&world, "Present card").await;
    // While the terminal waits for the card, the page reloads itself every
    // second and shows what the terminal shows.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let page = office.page(&cashier, &status).await;
            assert!(
                page.contains("<meta http-equiv=\"refresh\" content=\"1\">"),
                "{page}"
            );
            assert!(page.contains("under way"), "{page}");
            if page.contains("Present card") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the terminal's progress on the status page");
    let order_page = office.page(&cashier, &format!("/orders/{sale}")).await;
    assert!(
        order_page.contains(&format!("href=\"/payments/{payment}\"")),
        "{order_page}"
    );
    world.bed.ecr.ecr.present_card("approved").unwrap();
    // Then the outcome, and the page stops reloading.
    let ended = settled(&office, &cashier, &status).await;
    assert!(ended.contains("approved"), "{ended}");
    assert!(ended.contains("620000"), "the masked card: {ended}");
    assert!(!ended.contains("Present card"), "{ended}");
    assert_eq!(office.order(sale).order.status, Status::Paid);
    // The page's policy still forbids every script.
    let response = office.get(&cashier, &status).await;
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "{csp}");
}
