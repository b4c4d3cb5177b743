//! The cashier's phone web app as the nexo endpoint serves it: over real
//! TLS on loopback with the terminal's own certificate (trusted here as a
//! phone that installed it would), every file of the app with its type and
//! the strict security headers, every file that index.html, the manifest
//! and the service worker name is served (no 404s), the terminal's facts
//! for the app from a terminal signed on with a real host, and nothing
//! else under /app.

use host::admin::{MerchantSpec, TerminalSpec};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use terminal::ecr::EcrConfig;
use terminal::ecr::app::{ASSETS, CONTENT_SECURITY_POLICY, SECURITY_HEADERS};
use terminal::ecr::server::ServerOptions;
use terminal::ecr::tls::EcrCertificate;
use testbed::{EcrFixture, HostFixture, TerminalFixture};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP answer.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 text")
    }
}

/// The endpoint as a phone reaches it.
struct Phone {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Phone {
    /// A client that trusts only the terminal's certificate.
    fn trusting(addr: SocketAddr, cert: &EcrCertificate) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for der in pki::tls::certificates(&cert.cert_pem, "ECR certificate").unwrap() {
            roots.add(der).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Phone {
            addr,
            tls: Arc::new(tls),
        }
    }

    /// GETs `path` over a new TLS connection (as `localhost`, a name the
    /// certificate is valid for).
    async fn get(&self, path: &str) -> Answer {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS with the terminal's certificate");
        let peer: &CertificateDer<'_> = &tls.get_ref().1.peer_certificates().unwrap()[0];
        assert!(!peer.is_empty());
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut raw))
            .await
            .expect("the terminal answers")
            .unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP answer");
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let body = raw[split + 4..].to_vec();
        let answer = Answer {
            status,
            headers,
            body,
        };
        if let Some(length) = answer.header("content-length") {
            assert_eq!(
                length.parse::<usize>().unwrap(),
                answer.body.len(),
                "{path}: the whole body"
            );
        } else {
            assert!(answer.body.is_empty(), "{path}: a body has its length");
        }
        answer
    }
}

/// A terminal signed on with a real host, its nexo endpoint on loopback.
struct World {
    _host: HostFixture,
    terminal: TerminalFixture,
    _ecr: EcrFixture,
    phone: Phone,
}

const TID: &str = "T0000009";
const MERCHANT: &str = "M00000000000009";

async fn world() -> World {
    let host = HostFixture::start(
        MerchantSpec {
            merchant_id: MERCHANT.into(),
            name: "App Corner Shop".into(),
            currency: 392,
            ..testbed::corner_shop()
        },
        &[],
    )
    .await;
    let bundle = host
        .enroll(TerminalSpec {
            merchant_id: MERCHANT.into(),
            ..host.terminal_spec(TID)
        })
        .await;
    let terminal = TerminalFixture::open(&bundle, &host.data, host.terminal_options());
    let ecr = EcrFixture::start(
        &terminal.terminal,
        &host.terminal_dir(),
        "127.0.0.1:0".parse().unwrap(),
        EcrConfig::default(),
        ServerOptions::default(),
    )
    .await;
    World {
        phone: Phone::trusting(ecr.addr, &ecr.cert),
        _host: host,
        terminal,
        _ecr: ecr,
    }
}

fn assert_secured(path: &str, answer: &Answer) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(answer.header(name), Some(*value), "{path}: {name}");
    }
    let csp = answer.header("content-security-policy").unwrap();
    for forbidden in ["unsafe-inline", "unsafe-eval", "*"] {
        assert!(!csp.contains(forbidden), "{path}: CSP allows {forbidden}");
    }
    for required in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(csp.contains(required), "{path}: CSP lacks {required}");
    }
}

/// The values of `attribute="..."` in `html`.
fn attribute_values(html: &str, attribute: &str) -> Vec<String> {
    let needle = format!("{attribute}=\"");
    html.match_indices(&needle)
        .map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

/// Every `"/app/..."` string literal of a script.
fn app_paths(script: &str) -> BTreeSet<String> {
    script
        .match_indices("\"/app/")
        .map(|(at, _)| {
            let rest = &script[at + 1..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

/// The relative `from "./x.js"` imports of a module.
fn imports(script: &str) -> Vec<String> {
    script
        .match_indices("from \"./")
        .map(|(at, _)| {
            let rest = &script[at + "from \"./".len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_of_the_app_is_served_with_its_type_and_the_security_headers() {
    let w = world().await;
    for asset in ASSETS {
        let answer = w.phone.get(asset.path).await;
        assert_eq!(answer.status, 200, "{}", asset.path);
        assert_eq!(answer.header("content-type"), Some(asset.content_type));
        assert_eq!(answer.body, asset.body, "{}", asset.path);
        assert_secured(asset.path, &answer);
    }

    // What index.html loads, what the modules import, the manifest's icons
    // and the service worker's shell: all served.
    let index = w.phone.get("/app/").await;
    let mut referenced: BTreeSet<String> = attribute_values(index.text(), "src")
        .into_iter()
        .chain(attribute_values(index.text(), "href"))
        .map(|r| format!("/app/{r}"))
        .collect();
    assert!(
        referenced.len() >= 4,
        "index.html loads its script, style, manifest and icon: {referenced:?}"
    );
    for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
        let script = std::str::from_utf8(asset.body).unwrap();
        referenced.extend(imports(script).into_iter().map(|m| format!("/app/{m}")));
        referenced.extend(app_paths(script));
    }
    let manifest: Value =
        serde_json::from_slice(&w.phone.get("/app/manifest.webmanifest").await.body).unwrap();
    assert_eq!(manifest["start_url"], "/app/");
    for icon in manifest["icons"].as_array().unwrap() {
        referenced.insert(format!("/app/{}", icon["src"].as_str().unwrap()));
    }
    for path in &referenced {
        let answer = w.phone.get(path).await;
        assert_eq!(
            answer.status, 200,
            "{path} is referenced and must be served"
        );
    }
    // Every file is in the service worker's shell, so the app opens offline.
    let shell =
        app_paths(std::str::from_utf8(w.phone.get("/app/sw.js").await.body.as_slice()).unwrap());
    for asset in ASSETS.iter().filter(|a| a.path != "/app/sw.js") {
        assert!(
            shell.contains(asset.path),
            "{} is not in the service worker's shell",
            asset.path
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_learns_the_terminals_currency_and_nothing_else_is_served_under_app() {
    let w = world().await;
    w.terminal.wait("the terminal signs on", |s| s.online).await;
    let answer = w.phone.get("/app/terminal.json").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_secured("/app/terminal.json", &answer);
    let info: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        info,
        serde_json::json!({
            "poi_id": TID,
            "merchant_name": "App Corner Shop",
            "currency": "JPY",
            "decimals": 0,
            "online": true,
        })
    );

    let redirect = w.phone.get("/app").await;
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("location"), Some("/app/"));
    for missing in [
        "/app/missing.js",
        "/app/../nexo",
        "/app/index.html",
        "/app/nexo.js/x",
    ] {
        let answer = w.phone.get(missing).await;
        assert_eq!(answer.status, 404, "{missing}");
        assert_secured(missing, &answer);
    }
    // The nexo endpoint itself is as it was: messages by POST only.
    assert_eq!(w.phone.get("/nexo").await.status, 405);
}

#[test]
fn the_documented_policy_is_the_served_one() {
    let doc = include_str!("../../../docs/phone-app.md");
    let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words(doc).contains(&format!(
            "`Content-Security-Policy: {CONTENT_SECURITY_POLICY}`"
        )),
        "docs/phone-app.md quotes another policy than the app's"
    );
}
