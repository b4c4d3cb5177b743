//! The back office's pages over real HTTP on loopback, with a real SQLite
//! file: logins with and without TOTP, roles, CSRF, login limits, escaping
//! of hostile names, CSV export, audit verification.

use merchant::server::{Options, Running};
use merchant::users::{self, NewUser, PasswordCost, Role};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use std::collections::HashMap;

const SECRET: &str = "whsec-corner-shop-0123456789abcdef";
const PASSWORD: &str = "correct horse battery staple";
const COST: PasswordCost = PasswordCost {
    m_kib: 64,
    t: 1,
    p: 1,
};
const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)>&Co";

struct Office {
    _dir: tempfile::TempDir,
    running: Running,
    base: String,
    client: reqwest::Client,
    /// otpauth URIs by user name.
    totp: HashMap<String, String>,
}

impl Office {
    async fn start() -> Office {
        Self::start_with(
            HOSTILE_NAME,
            Vec::new(),
            &[
                ("olivia", Role::Owner),
                ("carl", Role::Cashier),
                ("ada", Role::Auditor),
            ],
        )
        .await
    }

    /// A back office named `merchant_name` with `modules` and `users`.
    async fn start_with(
        merchant_name: &str,
        modules: Vec<merchant::server::Module>,
        users: &[(&'static str, Role)],
    ) -> Office {
        let dir = tempfile::tempdir().unwrap();
        let running = merchant::server::start(Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            host_api: None,
            webhook_secret: pki::Secret::new(SECRET.into()),
            merchant_name: merchant_name.into(),
            password_cost: COST,
            modules,
            app_origins: Vec::new(),
        })
        .await
        .unwrap();
        let mut totp = HashMap::new();
        for &(name, role) in users {
            let new = NewUser {
                name,
                role,
                password: PASSWORD,
                totp: false,
            };
            let created = users::add_user(
                &running.store,
                &new,
                COST,
                "cli",
                merchant::store::unix_now(),
            )
            .unwrap();
            if let Some(uri) = created.otpauth {
                totp.insert(name.to_string(), uri.to_string());
            }
        }
        Office {
            base: format!("http://{}", running.addr),
            _dir: dir,
            running,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            totp,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn code(&self, name: &str, step_offset: i64) -> String {
        let totp = totp_rs::Totp::from_url(&self.totp[name]).unwrap();
        totp.generate((merchant::store::unix_now() + step_offset * 30) as u64)
            .to_string()
    }

    /// GET /login: the login CSRF cookie and token.
    async fn login_token(&self) -> String {
        let page = self.client.get(self.url("/login")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let cookie = set_cookie(&page, "posnet_login").unwrap();
        let html = page.text().await.unwrap();
        assert!(
            html.contains(&format!("value=\"{cookie}\"")),
            "the form carries the cookie's token"
        );
        cookie
    }

    async fn try_login(&self, name: &str, password: &str, code: &str) -> reqwest::Response {
        let token = self.login_token().await;
        self.client
            .post(self.url("/login"))
            .header(COOKIE, format!("posnet_login={token}"))
            .form(&[
                ("name", name),
                ("password", password),
                ("code", code),
                ("csrf", &token),
            ])
            .send()
            .await
            .unwrap()
    }

    /// Logs in; returns the session cookie and the page's CSRF token.
    async fn login(&self, name: &str) -> (String, String) {
        let code = if self.totp.contains_key(name) {
            self.code(name, 0)
        } else {
            String::new()
        };
        let response = self.try_login(name, PASSWORD, &code).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{name} logs in");
        let header = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|v| v.starts_with("posnet_session="))
            .unwrap();
        assert!(
            header.contains("HttpOnly")
                && header.contains("Secure")
                && header.contains("SameSite=Strict"),
            "{header}"
        );
        let session = set_cookie(&response, "posnet_session").unwrap();
        let home = self.get(&session, "/").await;
        let html = home.text().await.unwrap();
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        (session, csrf)
    }

    async fn get(&self, session: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header(COOKIE, format!("posnet_session={session}"))
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, session: &str, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header(COOKIE, format!("posnet_session={session}"))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Posts a signed host event carrying `transaction`.
    async fn event(&self, event_id: &str, transaction: serde_json::Value) {
        let body = serde_json::json!({ "event_id": event_id, "type": "transaction", "transaction": transaction }).to_string();
        let now = merchant::store::unix_now();
        let response = self
            .client
            .post(self.url("/webhooks/host"))
            .header("X-Posnet-Event-Id", event_id)
            .header("X-Posnet-Timestamp", now.to_string())
            .header(
                "X-Posnet-Signature",
                host::outbox::signature(SECRET.as_bytes(), now, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let (pair, _) = v.split_once(';')?;
        let (k, value) = pair.split_once('=')?;
        (k == name).then(|| value.to_string())
    })
}

fn transaction(id: i64, terminal: &str, amount: u64) -> serde_json::Value {
    serde_json::json!({
        "id": id, "kind": "sale", "state": "approved", "approved": true, "response_code": "00",
        "amount": amount, "currency": 156, "merchant_id": "M00000000000001", "terminal_id": terminal,
        "stan": id, "batch": 1, "rrn": format!("{id:012}"), "auth_code": "123456",
        "masked_pan": "620000******0013", "original_rrn": null, "at": merchant::store::unix_now(),
    })
}

#[tokio::test]
async fn owners_and_auditors_need_their_code_and_each_code_works_once() {
    let office = Office::start().await;
    let without = office.try_login("olivia", PASSWORD, "").await;
    assert_eq!(
        without.status(),
        StatusCode::UNAUTHORIZED,
        "an owner without a code is refused"
    );
    let wrong_password = office
        .try_login(
            "olivia",
            "correct horse battery stapl",
            &office.code("olivia", 0),
        )
        .await;
    assert_eq!(wrong_password.status(), StatusCode::UNAUTHORIZED);
    let stale = office
        .try_login("olivia", PASSWORD, &office.code("olivia", -3))
        .await;
    assert_eq!(
        stale.status(),
        StatusCode::UNAUTHORIZED,
        "a code three steps old"
    );
    let code = office.code("olivia", 0);
    let first = office.try_login("olivia", PASSWORD, &code).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&first, "posnet_session").unwrap();
    assert_eq!(
        office.get(&session, "/audit").await.status(),
        StatusCode::OK
    );
    // The same code again (a shoulder-surfed one) is refused.
    let again = office.try_login("olivia", PASSWORD, &code).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    let (auditor, _) = office.login("ada").await;
    assert_eq!(
        office.get(&auditor, "/audit").await.status(),
        StatusCode::OK
    );
    // Without a session every page sends to the login form.
    let anonymous = office
        .client
        .get(office.url("/transactions"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers()[LOCATION], "/login");
    assert_eq!(
        office.get(&"0".repeat(64), "/").await.status(),
        StatusCode::SEE_OTHER
    );
    office.running.stop().await;
}

#[tokio::test]
async fn roles_csrf_and_logout() {
    let office = Office::start().await;
    let (cashier, cashier_csrf) = office.login("carl").await;
    assert_eq!(office.get(&cashier, "/").await.status(), StatusCode::OK);
    assert_eq!(
        office.get(&cashier, "/transactions").await.status(),
        StatusCode::OK
    );
    for page in [
        "/audit",
        "/reconciliation",
        "/export.csv",
        "/reconciliation/1",
    ] {
        assert_eq!(
            office.get(&cashier, page).await.status(),
            StatusCode::FORBIDDEN,
            "cashier: {page}"
        );
    }
    let home = office.get(&cashier, "/").await.text().await.unwrap();
    assert!(
        !home.contains("href=\"/audit\""),
        "no link to what the role may not open"
    );

    let (owner, owner_csrf) = office.login("olivia").await;
    // A form without the session's token, or with another session's, is refused.
    assert_eq!(
        office
            .post(&owner, "/reconciliation", &[("date", "2026-01-01")])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        office
            .post(
                &owner,
                "/reconciliation",
                &[("date", "2026-01-01"), ("csrf", &cashier_csrf)]
            )
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        office.post(&owner, "/logout", &[]).await.status(),
        StatusCode::FORBIDDEN
    );
    // A login post without the login cookie's token.
    let token = office.login_token().await;
    let forged = office
        .client
        .post(office.url("/login"))
        .form(&[
            ("name", "carl"),
            ("password", PASSWORD),
            ("csrf", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // With the right token the reconciliation form is accepted (and says no host is configured).
    let run = office
        .post(
            &owner,
            "/reconciliation",
            &[("date", "2026-01-01"), ("csrf", &owner_csrf)],
        )
        .await;
    assert_eq!(run.status(), StatusCode::BAD_REQUEST);

    let out = office
        .post(&cashier, "/logout", &[("csrf", &cashier_csrf)])
        .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(set_cookie(&out, "posnet_session").as_deref(), Some(""));
    assert_eq!(
        office.get(&cashier, "/").await.status(),
        StatusCode::SEE_OTHER,
        "the session is gone"
    );
    assert_eq!(
        office.get(&owner, "/").await.status(),
        StatusCode::OK,
        "other sessions stay"
    );
    office.running.stop().await;
}

#[tokio::test]
async fn failed_logins_are_limited_per_user() {
    let office = Office::start().await;
    for _ in 0..5 {
        assert_eq!(
            office
                .try_login("carl", "wrong password here", "")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = office.try_login("carl", PASSWORD, "").await;
    assert_eq!(
        limited.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the right password no longer helps"
    );
    assert!(
        limited
            .text()
            .await
            .unwrap()
            .contains("Too many failed attempts")
    );
    // Another user from the same address is not locked out by carl's failures.
    let (session, _) = office.login("ada").await;
    assert_eq!(office.get(&session, "/").await.status(), StatusCode::OK);
    office.running.stop().await;
}

#[tokio::test]
async fn hostile_names_are_escaped_and_exports_defused() {
    let office = Office::start().await;
    office
        .event("txn-1", transaction(1, "<script>", 1_250))
        .await;
    office
        .event("txn-2", transaction(2, "=HYPERLINK(\"http://x\")", 700))
        .await;
    office.event("txn-3", transaction(3, "T0000001", 300)).await;
    let (owner, _) = office.login("olivia").await;
    for page in [
        "/",
        "/transactions",
        "/transactions/1",
        "/transactions?terminal=%3Cscript%3E",
    ] {
        let response = office.get(&owner, page).await;
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("default-src 'none'"),
            "no script may run: {csp}"
        );
        let html = response.text().await.unwrap();
        assert!(
            !html.contains("<script>") && !html.contains("<img src=x"),
            "{page}: unescaped"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;&amp;Co"),
            "{page}: merchant name escaped"
        );
    }
    let list = office
        .get(&owner, "/transactions?terminal=%3Cscript%3E")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        list.contains("<td>&lt;script&gt;</td>"),
        "the filter finds the hostile terminal"
    );
    assert!(!list.contains("T0000001</td>"), "and only it");
    let dashboard = office.get(&owner, "/").await.text().await.unwrap();
    assert!(dashboard.contains("22.50 CNY"), "net sales of the day");
    assert!(dashboard.contains("<svg"), "the chart");

    let filtered = office
        .get(&owner, "/transactions?min=5.00&max=12.50&last4=0013")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        filtered.contains("12.50 CNY")
            && filtered.contains("7.00 CNY")
            && !filtered.contains("3.00 CNY")
    );
    assert_eq!(
        office.get(&owner, "/transactions?last4=12").await.status(),
        StatusCode::BAD_REQUEST
    );

    let export = office.get(&owner, "/export.csv").await;
    assert_eq!(export.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = export.text().await.unwrap();
    assert!(csv.starts_with("host_id,time_utc,terminal_id,"));
    assert!(
        csv.contains(",\"'=HYPERLINK(\"\"http://x\"\")\","),
        "formula defused: {csv}"
    );
    assert_eq!(csv.lines().count(), 4);
    office.running.stop().await;
}

#[tokio::test]
async fn the_audit_page_shows_changes_and_a_broken_chain() {
    let office = Office::start().await;
    let (auditor, _) = office.login("ada").await;
    let page = office
        .get(&auditor, "/audit?verify=1")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("The chain holds: 4 rows"),
        "three users added, one login"
    );
    assert!(page.contains("user.add") && page.contains("session.login"));
    office
        .running
        .store
        .read(|c| {
            c.execute(
                "UPDATE audit_log SET actor = 'someone else' WHERE id = 2",
                [],
            )?;
            Ok(())
        })
        .unwrap();
    let page = office
        .get(&auditor, "/audit?verify=1")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("The chain breaks at row 2"), "{page}");
    office.running.stop().await;
}

/// A module as the retail one will be: its own table and an owner-only page.
fn shelf_routes(state: std::sync::Arc<merchant::web::AppState>) -> axum::Router {
    use axum::extract::State;
    async fn shelf(
        State(state): State<std::sync::Arc<merchant::web::AppState>>,
        authed: merchant::web::Authed,
    ) -> Result<maud::Markup, merchant::web::WebError> {
        merchant::web::require(&authed, merchant::web::Area::Audit)?;
        let items: i64 = state
            .store
            .read(|c| Ok(c.query_row("SELECT count(*) FROM shelf_items", [], |r| r.get(0))?))?;
        Ok(merchant::web::frame(
            &state,
            &authed,
            "Shelf",
            maud::html! { p { (items) " items" } },
        ))
    }
    axum::Router::new()
        .route("/shelf", axum::routing::get(shelf))
        .with_state(state)
}

#[tokio::test]
async fn a_module_adds_its_tables_and_pages() {
    let office = Office::start_with(
        "Corner Shop",
        vec![merchant::server::Module {
            migrations: ledger::Migrations {
                component: "shelf",
                steps: &["CREATE TABLE shelf_items (id INTEGER PRIMARY KEY) STRICT; INSERT INTO shelf_items DEFAULT VALUES;"],
            },
            routes: shelf_routes,
        }],
        &[("carl", Role::Cashier)],
    )
    .await;
    let shelf: i64 = office
        .running
        .store
        .read(|c| Ok(c.query_row("SELECT count(*) FROM shelf_items", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(shelf, 1, "the module's schema step ran");
    let anonymous = office
        .client
        .get(office.url("/shelf"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        StatusCode::SEE_OTHER,
        "the module's page needs a session"
    );
    assert!(
        anonymous.headers().contains_key("content-security-policy"),
        "and gets the headers"
    );
    let (cashier, _) = office.login("carl").await;
    assert_eq!(
        office.get(&cashier, "/shelf").await.status(),
        StatusCode::FORBIDDEN,
        "and its role check"
    );
    office.running.stop().await;
}
