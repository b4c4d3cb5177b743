//! A back office with every scenario module, served on loopback over a
//! real SQLite file, and users of each role with live sessions.

#![allow(dead_code)] // Each test file uses its own share of these helpers.

use merchant::server::{Options, Running};
use merchant::store::{Store, unix_now};
use merchant::users::{self, NewUser, PasswordCost, Role};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION};

pub const SECRET: &str = "whsec-corner-shop-0123456789abcdef";
/// The one phone app origin the back office's device API answers.
pub const APP_ORIGIN: &str = "https://127.0.0.1:8443";
const COST: PasswordCost = PasswordCost {
    m_kib: 64,
    t: 1,
    p: 1,
};

pub struct Office {
    pub dir: tempfile::TempDir,
    pub running: Running,
    pub base: String,
    pub client: reqwest::Client,
}

/// A user's session: its cookie token and the CSRF token of its forms.
#[derive(Clone)]
pub struct Session {
    pub token: String,
    pub csrf: String,
}

impl Office {
    pub async fn start() -> Office {
        Self::start_named("Corner Shop").await
    }

    pub async fn start_named(name: &str) -> Office {
        let dir = tempfile::tempdir().unwrap();
        let running = merchant::server::start(Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            host_api: None,
            webhook_secret: pki::Secret::new(SECRET.into()),
            merchant_name: name.into(),
            password_cost: COST,
            modules: merchant::modules::all(),
            app_origins: vec![APP_ORIGIN.into()],
        })
        .await
        .unwrap();
        Office {
            base: format!("http://{}", running.addr),
            dir,
            running,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.running.store
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Adds user `name` with `role` and starts a session for it, as a
    /// login does.
    pub fn session(&self, name: &str, role: Role) -> Session {
        let new = NewUser {
            name,
            role,
            password: "correct horse battery staple",
            totp: false,
        };
        let created = users::add_user(self.store(), &new, COST, "cli", unix_now()).unwrap();
        let (token, session) = self
            .store()
            .read(|c| merchant::session::create(c, &created.user, unix_now()))
            .unwrap();
        Session {
            token,
            csrf: session.csrf,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, s: &Session, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header(COOKIE, format!("posnet_session={}", s.token))
            .send()
            .await
            .unwrap()
    }

    /// The page at `path`, which must answer 200.
    pub async fn page(&self, s: &Session, path: &str) -> String {
        let response = self.get(s, path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.unwrap()
    }

    /// POSTs `form` with the session's CSRF token.
    pub async fn post(&self, s: &Session, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        fields.push(("csrf", &s.csrf));
        self.post_raw(s, path, &fields).await
    }

    /// POSTs exactly `form`.
    pub async fn post_raw(
        &self,
        s: &Session,
        path: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header(COOKIE, format!("posnet_session={}", s.token))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// POSTs `form`, which must redirect; returns where to.
    pub async fn submit(&self, s: &Session, path: &str, form: &[(&str, &str)]) -> String {
        let response = self.post(s, path, form).await;
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_string());
        let body = response.text().await.unwrap();
        assert_eq!(status, StatusCode::SEE_OTHER, "POST {path}: {body}");
        location.unwrap()
    }

    /// POSTs `form`, which must be refused with `status`; returns the page.
    pub async fn refused(
        &self,
        s: &Session,
        path: &str,
        form: &[(&str, &str)],
        status: StatusCode,
    ) -> String {
        let response = self.post(s, path, form).await;
        assert_eq!(response.status(), status, "POST {path}");
        response.text().await.unwrap()
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.store()
            .read(|c| Ok(c.query_row(sql, [], |r| r.get(0))?))
            .unwrap()
    }

    /// The id of the catalog item with `code`.
    pub fn item(&self, code: &str) -> i64 {
        self.store()
            .read(|c| {
                Ok(c.query_row(
                    "SELECT id FROM catalog_items WHERE code = ?1",
                    [code],
                    |r| r.get(0),
                )?)
            })
            .unwrap()
    }

    /// The stock of the catalog item with `code`.
    pub fn stock(&self, code: &str) -> i64 {
        self.store()
            .read(|c| {
                Ok(c.query_row(
                    "SELECT stock FROM catalog_items WHERE code = ?1",
                    [code],
                    |r| r.get(0),
                )?)
            })
            .unwrap()
    }

    /// The order with its lines, parts and payments.
    pub fn order(&self, id: i64) -> merchant::modules::orders::Detail {
        self.store()
            .read(|c| Ok(merchant::modules::orders::detail(c, id)))
            .unwrap()
            .unwrap()
            .unwrap()
    }

    /// Seeds the demonstration data.
    pub fn seed(&self) {
        merchant::modules::seed::demo(self.store(), 156, "cli", unix_now()).unwrap();
    }
}

/// The order id of a `/orders/<id>` location.
pub fn order_id(location: &str) -> i64 {
    location
        .strip_prefix("/orders/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not an order: {location}"))
}
