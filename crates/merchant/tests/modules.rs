//! The selling scenarios over real HTTP and a real SQLite file: the
//! demonstration catalog, shop sales by barcode with stock limits, table
//! orders split by items and equally, clinic bills, tickets that expire,
//! and the role and CSRF checks of every new page and form.

mod modules_common;

use merchant::modules::orders::{self, Status};
use merchant::store::unix_now;
use merchant::users::Role;
use modules_common::{Office, order_id};
use proptest::prelude::*;
use reqwest::StatusCode;

const HOSTILE: &str = "<script>alert(1)</script>&Co";

fn today_plus(days: i64) -> String {
    merchant::reports::utc_date(unix_now() + days * 86_400)
}

/// Opens table `name` as `s`; returns the order id.
async fn open_table(office: &Office, s: &modules_common::Session, name: &str) -> i64 {
    let table: i64 = office.count(&format!(
        "SELECT id FROM restaurant_tables WHERE name = '{name}'"
    ));
    order_id(
        &office
            .submit(s, &format!("/tables/{table}/open"), &[])
            .await,
    )
}

async fn add(office: &Office, s: &modules_common::Session, order: i64, code: &str, quantity: &str) {
    let item = office.item(code).to_string();
    office
        .submit(
            s,
            &format!("/orders/{order}/lines"),
            &[("item", &item), ("quantity", quantity)],
        )
        .await;
}

#[tokio::test]
async fn a_table_bill_splits_by_items_and_equally() {
    let office = Office::start().await;
    office.seed();
    let cashier = office.session("carl", Role::Cashier);
    let order = open_table(&office, &cashier, "3").await;
    // The same table again: its current order.
    assert_eq!(open_table(&office, &cashier, "3").await, order);
    add(&office, &cashier, order, "MENU-NOODLES", "2").await;
    add(&office, &cashier, order, "MENU-BEER", "1").await;
    add(&office, &cashier, order, "MENU-BEER", "2").await;
    let d = office.order(order);
    assert_eq!(d.lines.len(), 2, "the beers are one line");
    assert_eq!(d.lines[1].quantity, 3);
    assert_eq!(d.order.total, 2 * 3_800 + 3 * 1_200);
    let tables = office.page(&cashier, "/tables").await;
    assert!(
        tables.contains(&format!("/orders/{order}")),
        "table 3 is occupied"
    );

    // By items: the noodles to part 1, the beers to part 2.
    let form = office
        .page(&cashier, &format!("/orders/{order}/split"))
        .await;
    let (noodles, beers) = (d.lines[0].id, d.lines[1].id);
    assert!(form.contains(&format!("name=\"line_{noodles}\"")), "{form}");
    let (n, b) = (format!("line_{noodles}"), format!("line_{beers}"));
    office
        .submit(
            &cashier,
            &format!("/orders/{order}/split"),
            &[("mode", "items"), (&n, "1"), (&b, "2")],
        )
        .await;
    let d = office.order(order);
    let parts: Vec<(i64, i64, Vec<i64>)> = d
        .parts
        .iter()
        .map(|p| (p.number, p.amount, p.lines.clone()))
        .collect();
    assert_eq!(parts, [(1, 7_600, vec![noodles]), (2, 3_600, vec![beers])]);
    // Split, the lines cannot change.
    let beer = office.item("MENU-BEER").to_string();
    let refused = office
        .refused(
            &cashier,
            &format!("/orders/{order}/lines"),
            &[("item", &beer), ("quantity", "1")],
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(refused.contains("can no longer change"), "{refused}");

    // Undone, then split equally in three: the remainder to the first part.
    office
        .submit(&cashier, &format!("/orders/{order}/split/clear"), &[])
        .await;
    assert!(office.order(order).parts.is_empty());
    office
        .submit(
            &cashier,
            &format!("/orders/{order}/split"),
            &[("mode", "equal"), ("parts", "3")],
        )
        .await;
    let amounts: Vec<i64> = office.order(order).parts.iter().map(|p| p.amount).collect();
    assert_eq!(amounts, [3_734, 3_733, 3_733]);
    assert_eq!(amounts.iter().sum::<i64>(), 11_200);

    // Malformed splits are refused and change nothing.
    office
        .submit(&cashier, &format!("/orders/{order}/split/clear"), &[])
        .await;
    for form in [
        vec![("mode", "items"), (n.as_str(), "1")],
        vec![("mode", "items"), (n.as_str(), "1"), (b.as_str(), "1")],
        vec![("mode", "items"), (n.as_str(), "1"), (b.as_str(), "3")],
        vec![("mode", "equal"), ("parts", "1")],
        vec![("mode", "equal"), ("parts", "21")],
        vec![("mode", "thirds")],
    ] {
        office
            .refused(
                &cashier,
                &format!("/orders/{order}/split"),
                &form,
                StatusCode::BAD_REQUEST,
            )
            .await;
    }
    assert!(office.order(order).parts.is_empty());
    assert_eq!(office.count("SELECT count(*) FROM order_parts"), 0);
    // The split is audited.
    assert_eq!(
        office.count("SELECT count(*) FROM audit_log WHERE action = 'order.split'"),
        2
    );
}

#[tokio::test]
async fn equal_splits_stored_in_the_database_sum_to_the_total() {
    let office = Office::start().await;
    let store = office.store();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(48));
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&(1i64..=1_000_000_000, 2u32..=20), |(total, parts)| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let split = store
                .write(|tx| -> Result<Vec<i64>, merchant::modules::SalesError> {
                    let code = format!("CASE-{n}");
                    let item = merchant::modules::catalog::add(
                        tx,
                        &merchant::modules::catalog::NewItem {
                            kind: orders::Kind::Menu,
                            code: &code,
                            name: "dish",
                            price: total,
                            currency: 156,
                            barcode: None,
                            stock: None,
                            low_stock: None,
                            valid_on: None,
                        },
                        "test",
                        0,
                    )?;
                    let order = orders::create(tx, orders::Kind::Menu, "test", 0)?;
                    orders::add_item(tx, order, item, 1, "test", 0, "2026-01-01")?;
                    match orders::split_equal(tx, order, parts, "test", 0) {
                        Err(merchant::modules::SalesError::Refused(_))
                            if total < i64::from(parts) =>
                        {
                            Ok(Vec::new())
                        }
                        other => {
                            let amounts = other?;
                            let stored: Vec<i64> =
                                orders::parts(tx, order)?.iter().map(|p| p.amount).collect();
                            assert_eq!(stored, amounts);
                            Ok(stored)
                        }
                    }
                })
                .unwrap();
            if total >= i64::from(parts) {
                prop_assert_eq!(split.len(), parts as usize);
                prop_assert_eq!(split.iter().sum::<i64>(), total);
                prop_assert!(split.iter().all(|a| *a > 0));
            }
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn a_patients_bill_holds_fees_and_the_patient_stays_out_of_the_audit_log() {
    let office = Office::start().await;
    office.seed();
    let cashier = office.session("carl", Role::Cashier);
    let at = office
        .submit(
            &cashier,
            "/patients",
            &[
                ("name", HOSTILE),
                ("birth_date", "1984-02-29"),
                ("number", ""),
            ],
        )
        .await;
    let page = office.page(&cashier, &at).await;
    assert!(page.contains("Patient P000001"), "{page}");
    assert!(!page.contains(HOSTILE), "the name is escaped");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&amp;Co"));
    let list = office.page(&cashier, "/patients?q=%3Cscript").await;
    assert!(list.contains("P000001") && !list.contains("<script>"));

    // A date of birth to come, a taken number, a malformed one: refused.
    for (dob, number) in [
        (today_plus(2), ""),
        ("1990-01-01".into(), "P000001"),
        ("1990-01-01".into(), "a b"),
    ] {
        office
            .refused(
                &cashier,
                "/patients",
                &[("name", "Ann"), ("birth_date", &dob), ("number", number)],
                StatusCode::BAD_REQUEST,
            )
            .await;
    }

    let patient = at.strip_prefix("/patients/").unwrap();
    let bill = order_id(
        &office
            .submit(&cashier, &format!("/patients/{patient}/bill"), &[])
            .await,
    );
    assert_eq!(
        order_id(
            &office
                .submit(&cashier, &format!("/patients/{patient}/bill"), &[])
                .await
        ),
        bill,
        "the open bill again"
    );
    add(&office, &cashier, bill, "FEE-CONSULT", "1").await;
    add(&office, &cashier, bill, "FEE-BLOOD", "1").await;
    let noodles = office.item("MENU-NOODLES").to_string();
    let refused = office
        .refused(
            &cashier,
            &format!("/orders/{bill}/lines"),
            &[("item", &noodles), ("quantity", "1")],
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(refused.contains("not sold on a patient bill"), "{refused}");
    let d = office.order(bill);
    assert_eq!(d.order.kind, orders::Kind::Fee);
    assert_eq!(d.order.total, 8_000 + 12_000);
    let page = office.page(&cashier, &format!("/orders/{bill}")).await;
    assert!(page.contains("Patient P000001") && page.contains("Blood test"));
    assert!(page.contains("200.00 CNY"), "{page}");
    let patient_page = office.page(&cashier, &at).await;
    assert!(patient_page.contains(&format!("/orders/{bill}")));

    // The audit log names the patient by number only.
    let logged = office.count("SELECT count(*) FROM audit_log WHERE subject = 'patient:P000001'");
    assert_eq!(logged, 2, "registered, bill opened");
    assert_eq!(
        office.count("SELECT count(*) FROM audit_log WHERE instr(coalesce(after, '') || coalesce(before, ''), 'script') > 0"),
        0
    );
}

#[tokio::test]
async fn an_expired_ticket_cannot_be_sold() {
    let office = Office::start().await;
    let owner = office.session("olivia", Role::Owner);
    let cashier = office.session("carl", Role::Cashier);
    for (code, day) in [("GIG-PAST", today_plus(-1)), ("GIG-TODAY", today_plus(0))] {
        office
            .submit(
                &owner,
                "/catalog",
                &[
                    ("kind", "ticket"),
                    ("code", code),
                    ("name", code),
                    ("price", "80"),
                    ("currency", "156"),
                    ("valid_on", &day),
                ],
            )
            .await;
    }
    // A ticket needs its date.
    office
        .refused(
            &owner,
            "/catalog",
            &[
                ("kind", "ticket"),
                ("code", "GIG-X"),
                ("name", "x"),
                ("price", "1"),
                ("currency", "156"),
            ],
            StatusCode::BAD_REQUEST,
        )
        .await;
    let page = office.page(&cashier, "/tickets").await;
    assert!(page.contains("expired"), "{page}");

    let past = office.item("GIG-PAST").to_string();
    let refused = office
        .refused(
            &cashier,
            "/tickets/sell",
            &[("item", &past), ("quantity", "1")],
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(refused.contains("has expired"), "{refused}");
    assert_eq!(
        office.count("SELECT count(*) FROM orders"),
        0,
        "no order is left behind"
    );

    let today = office.item("GIG-TODAY").to_string();
    let order = order_id(
        &office
            .submit(
                &cashier,
                "/tickets/sell",
                &[("item", &today), ("quantity", "2")],
            )
            .await,
    );
    assert_eq!(office.order(order).order.total, 16_000);
    // Nor added to an order that sells tickets.
    office
        .refused(
            &cashier,
            &format!("/orders/{order}/lines"),
            &[("item", &past), ("quantity", "1")],
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(office.order(order).lines.len(), 1);
}

#[tokio::test]
async fn a_shop_sells_by_barcode_within_its_stock() {
    let office = Office::start().await;
    office.seed();
    let cashier = office.session("carl", Role::Cashier);
    let found = office.page(&cashier, "/retail?barcode=6901234567892").await;
    assert!(
        found.contains("Green tea 100 g") && found.contains("40 in stock"),
        "{found}"
    );
    let missing = office.page(&cashier, "/retail?barcode=0000").await;
    assert!(missing.contains("No item has barcode 0000"));

    let sale = order_id(
        &office
            .submit(&cashier, "/retail/sales", &[("barcode", "6901234567892")])
            .await,
    );
    office
        .submit(
            &cashier,
            &format!("/orders/{sale}/lines"),
            &[("barcode", "6901234567915"), ("quantity", "3")],
        )
        .await;
    let d = office.order(sale);
    assert_eq!(d.order.total, 1_250 + 3 * 2_880);
    // Honey: 3 counted, all on this sale.
    let refused = office
        .refused(
            &cashier,
            &format!("/orders/{sale}/lines"),
            &[("barcode", "6901234567915"), ("quantity", "1")],
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(refused.contains("only 3 in stock"), "{refused}");
    office
        .refused(
            &cashier,
            &format!("/orders/{sale}/lines"),
            &[("barcode", "nope"), ("quantity", "1")],
            StatusCode::BAD_REQUEST,
        )
        .await;
    // Not paid: nothing leaves the stock.
    assert_eq!(office.stock("SKU-HONEY-250"), 3);
    let low = office.page(&cashier, "/retail/stock").await;
    assert!(low.contains("Honey 250 g"), "3 is under the level of 5");

    // Removing a line, cancelling: stock untouched, the order closed.
    let honey = d.lines[1].id;
    office
        .submit(
            &cashier,
            &format!("/orders/{sale}/lines/{honey}/remove"),
            &[],
        )
        .await;
    assert_eq!(office.order(sale).order.total, 1_250);
    office
        .submit(&cashier, &format!("/orders/{sale}/cancel"), &[])
        .await;
    assert_eq!(office.order(sale).order.status, Status::Cancelled);
    assert_eq!(office.stock("SKU-TEA-100"), 40);
    office
        .refused(
            &cashier,
            &format!("/orders/{sale}/lines"),
            &[("barcode", "6901234567892")],
            StatusCode::BAD_REQUEST,
        )
        .await;
}

#[tokio::test]
async fn paying_needs_a_paired_terminal() {
    let office = Office::start().await;
    office.seed();
    let cashier = office.session("carl", Role::Cashier);
    let sale = order_id(
        &office
            .submit(&cashier, "/retail/sales", &[("barcode", "6901234567908")])
            .await,
    );
    let page = office.page(&cashier, &format!("/orders/{sale}")).await;
    assert!(page.contains("No terminal is paired"), "{page}");
    let refused = office
        .refused(
            &cashier,
            &format!("/orders/{sale}/pay"),
            &[("terminal", "T0000001")],
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(refused.contains("not paired"), "{refused}");
    assert_eq!(office.count("SELECT count(*) FROM order_payments"), 0);
    // A pairing code that is not one is refused by the pairing step.
    assert!(
        merchant::modules::payments::pair(
            office.store(),
            office.data_dir(),
            "posnet-pair://nothing",
            "cli"
        )
        .is_err()
    );
    let unknown =
        merchant::modules::payments::unpair(office.store(), office.data_dir(), "T0000001", "cli")
            .unwrap_err();
    assert!(
        matches!(&unknown, merchant::modules::payments::TerminalError::NotPaired(t) if t == "T0000001"),
        "{unknown}"
    );
    assert!(
        merchant::modules::payments::terminals(office.data_dir())
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn roles_and_csrf_on_the_sales_pages() {
    let office = Office::start_named(HOSTILE).await;
    office.seed();
    let owner = office.session("olivia", Role::Owner);
    let cashier = office.session("carl", Role::Cashier);
    let auditor = office.session("ada", Role::Auditor);
    let sale = order_id(&office.submit(&cashier, "/retail/sales", &[]).await);
    let patient = office
        .submit(
            &cashier,
            "/patients",
            &[("name", "Ann"), ("birth_date", "1990-01-01")],
        )
        .await;
    let item = office.item("SKU-MUG-01");
    let pages = [
        "/orders".to_string(),
        format!("/orders/{sale}"),
        "/catalog".into(),
        format!("/catalog/{item}"),
        "/retail".into(),
        "/retail/stock".into(),
        "/tables".into(),
        "/patients".into(),
        patient.clone(),
        "/tickets".into(),
        "/terminals".into(),
    ];
    for s in [&owner, &cashier, &auditor] {
        for page in &pages {
            let html = office.page(s, page).await;
            assert!(
                !html.contains(HOSTILE),
                "{page}: the merchant's name is escaped"
            );
            for link in ["/orders\"", "/tables\"", "/patients\"", "/tickets\""] {
                assert!(html.contains(link), "{page}: the header links the modules");
            }
        }
    }
    let anonymous = office
        .client
        .get(office.url("/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    // The auditor sees no forms that change anything.
    let html = office.page(&auditor, &format!("/orders/{sale}")).await;
    assert!(!html.contains("/lines\""), "{html}");
    assert!(
        !office
            .page(&auditor, "/catalog")
            .await
            .contains("Add an item")
    );

    let item = item.to_string();
    let table = office
        .count("SELECT id FROM restaurant_tables WHERE name = '1'")
        .to_string();
    let sells: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/retail/sales".into(), vec![]),
        (format!("/orders/{sale}/lines"), vec![("item", &item)]),
        (format!("/orders/{sale}/cancel"), vec![]),
        (
            format!("/orders/{sale}/split"),
            vec![("mode", "equal"), ("parts", "2")],
        ),
        (
            format!("/orders/{sale}/pay"),
            vec![("terminal", "T0000001")],
        ),
        (format!("/tables/{table}/open"), vec![]),
        (
            "/patients".into(),
            vec![("name", "Bo"), ("birth_date", "1990-01-01")],
        ),
        ("/tickets/sell".into(), vec![("item", &item)]),
        ("/payments/1/check".into(), vec![]),
    ];
    let manages: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/catalog".into(),
            vec![
                ("kind", "retail"),
                ("code", "X1"),
                ("name", "x"),
                ("price", "1"),
                ("currency", "156"),
            ],
        ),
        (format!("/catalog/{item}"), vec![("price", "1")]),
        ("/tables".into(), vec![("name", "9"), ("seats", "2")]),
    ];
    let audit_rows = office.count("SELECT count(*) FROM audit_log");
    for (path, form) in sells.iter().chain(&manages) {
        office
            .refused(&auditor, path, form, StatusCode::FORBIDDEN)
            .await;
    }
    for (path, form) in &manages {
        office
            .refused(&cashier, path, form, StatusCode::FORBIDDEN)
            .await;
    }
    // Without the session's CSRF token, nothing is done for anyone.
    for s in [&owner, &cashier] {
        for (path, form) in sells.iter().chain(&manages) {
            let response = office.post_raw(s, path, form).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        }
    }
    assert_eq!(
        office.count("SELECT count(*) FROM audit_log"),
        audit_rows,
        "nothing refused changed anything"
    );

    // The owner manages: an item whose name is hostile is shown escaped.
    office
        .submit(
            &owner,
            "/catalog",
            &[
                ("kind", "retail"),
                ("code", "X1"),
                ("name", HOSTILE),
                ("price", "1.5"),
                ("currency", "156"),
                ("stock", "2"),
            ],
        )
        .await;
    let x1 = office.item("X1");
    assert_eq!(office.stock("X1"), 2);
    office
        .submit(
            &owner,
            &format!("/catalog/{x1}"),
            &[("price", "2.25"), ("stock", "7"), ("active", "1")],
        )
        .await;
    assert_eq!(office.stock("X1"), 7);
    let html = office.page(&cashier, "/catalog").await;
    assert!(
        !html.contains(HOSTILE) && html.contains("2.25 CNY"),
        "{html}"
    );
    office
        .submit(&owner, "/tables", &[("name", "Terrace"), ("seats", "4")])
        .await;
    assert!(
        office
            .page(&cashier, "/tables")
            .await
            .contains("Table Terrace")
    );
    assert_eq!(
        office.count("SELECT count(*) FROM audit_log WHERE action IN ('catalog.add', 'catalog.update', 'table.add') AND actor = 'olivia'"),
        3
    );
    let verification = office.store().read(merchant::audit::verify).unwrap();
    assert!(verification.broken.is_none(), "{verification:?}");
}
