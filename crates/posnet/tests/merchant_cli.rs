//! `posnet merchant` as an operator runs it: users added from the command
//! line (the TOTP URI printed once), the back office serving pages and
//! webhooks until SIGTERM, and `audit verify` naming a row edited with
//! plain SQL.

// Shared with the crash tests; this one does not kill with SIGKILL.
#[allow(dead_code)]
mod support;

use std::io::Write;
use std::process::Stdio;
use support::{Daemon, posnet, run};

const SECRET: &str = "whsec-corner-shop-0123456789abcdef";

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn users_webhooks_and_a_tampered_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("merchant");
    let data_arg = data.to_str().unwrap();

    let owner = run(
        {
            let mut c = posnet(dir.path());
            c.env("POSNET_MERCHANT_PASSWORD", "correct horse battery staple");
            c
        },
        &[
            "merchant",
            "--data-dir",
            data_arg,
            "user",
            "add",
            "--role",
            "owner",
            "--name",
            "olivia",
        ],
    );
    let owner = json(&owner);
    assert_eq!(owner["role"], "owner");
    assert!(
        owner["otpauth"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/posnet:olivia?secret=")
    );

    // The password from standard input; a cashier has no second factor.
    let mut child = posnet(dir.path())
        .args([
            "merchant",
            "--data-dir",
            data_arg,
            "user",
            "add",
            "--role",
            "cashier",
            "--name",
            "carl",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"another long password\n")
        .unwrap();
    let cashier = child.wait_with_output().unwrap();
    assert!(
        cashier.status.success(),
        "{}",
        String::from_utf8_lossy(&cashier.stderr)
    );
    assert_eq!(json(&cashier)["otpauth"], serde_json::Value::Null);
    let short = posnet(dir.path())
        .env("POSNET_MERCHANT_PASSWORD", "short")
        .args([
            "merchant",
            "--data-dir",
            data_arg,
            "user",
            "add",
            "--role",
            "auditor",
            "--name",
            "ada",
        ])
        .output()
        .unwrap();
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("password must be"));

    // The back office refuses a short webhook secret, then runs with a good one.
    let secret_file = dir.path().join("webhook.secret");
    std::fs::write(&secret_file, "too-short\n").unwrap();
    let refused = posnet(dir.path())
        .args([
            "merchant",
            "--data-dir",
            data_arg,
            "run",
            "--listen",
            "127.0.0.1:0",
            "--webhook-secret-file",
        ])
        .arg(&secret_file)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let daemon = Daemon::start(
        posnet(dir.path()),
        &[
            "merchant",
            "--data-dir",
            data_arg,
            "run",
            "--listen",
            "127.0.0.1:0",
            "--webhook-secret-file",
            secret_file.to_str().unwrap(),
            "--name",
            "Corner Shop",
        ],
        dir.path(),
        "merchant.log",
    );
    let addr = daemon.first_line["listening"].as_str().unwrap().to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (health, accepted) = runtime.block_on(async {
        let client = reqwest::Client::new();
        let health = client.get(format!("http://{addr}/healthz")).send().await.unwrap().status();
        let body = r#"{"event_id":"txn-1","type":"transaction","transaction":{"id":1,"kind":"sale","state":"approved","approved":true,"response_code":"00","amount":1250,"currency":156,"merchant_id":"M00000000000001","terminal_id":"T0000001","stan":1,"batch":1,"rrn":"000000000001","auth_code":"123456","masked_pan":"620000******0013","original_rrn":null,"at":1767225598}}"#;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let accepted = client
            .post(format!("http://{addr}/webhooks/host"))
            .header("X-Posnet-Event-Id", "txn-1")
            .header("X-Posnet-Timestamp", now.to_string())
            .header("X-Posnet-Signature", host::outbox::signature(SECRET.as_bytes(), now, body.as_bytes()))
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        (health, accepted)
    });
    assert_eq!((health.as_u16(), accepted.as_u16()), (200, 200));
    daemon.terminate();

    let db = rusqlite::Connection::open(data.join("merchant.db")).unwrap();
    let recorded: i64 = db
        .query_row("SELECT count(*) FROM transactions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        recorded, 1,
        "the event was on disk when it was acknowledged"
    );

    let verified = json(&run(
        posnet(dir.path()),
        &["merchant", "--data-dir", data_arg, "audit", "verify"],
    ));
    assert_eq!(verified["rows"], 2);
    assert_eq!(verified["broken"], serde_json::Value::Null);
    // An owner made a cashier, after the fact, by someone with the file.
    db.execute(
        "UPDATE audit_log SET after = '{\"role\":\"owner\",\"totp\":false}' WHERE id = 2",
        [],
    )
    .unwrap();
    let broken = posnet(dir.path())
        .args(["merchant", "--data-dir", data_arg, "audit", "verify"])
        .output()
        .unwrap();
    assert!(!broken.status.success());
    assert_eq!(json(&broken)["broken"]["id"], 2);
    assert!(String::from_utf8_lossy(&broken.stderr).contains("audit log broken at row 2"));
}

#[test]
fn cashier_devices_from_the_command_line_and_the_device_api_for_the_app_origin_given() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("merchant");
    let data_arg = data.to_str().unwrap();
    let merchant = |args: &[&str]| {
        let mut all = vec!["merchant", "--data-dir", data_arg];
        all.extend_from_slice(args);
        json(&run(posnet(dir.path()), &all))
    };
    let added = merchant(&["device", "add", "--name", "counter phone"]);
    let token = added["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 64);
    let listed = run(
        posnet(dir.path()),
        &["merchant", "--data-dir", data_arg, "device", "list"],
    );
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("counter phone") && !listed.contains(&token),
        "{listed}"
    );

    let secret_file = dir.path().join("webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let serve = |origin: &str| {
        let mut c = posnet(dir.path());
        c.args([
            "merchant",
            "--data-dir",
            data_arg,
            "run",
            "--listen",
            "127.0.0.1:0",
            "--webhook-secret-file",
        ])
        .arg(&secret_file)
        .args(["--app-origin", origin]);
        c
    };
    // An origin with a path is not an origin.
    let refused = serve("https://127.0.0.1:8443/app/").output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("app origin"));
    let daemon = Daemon::start(
        serve("https://127.0.0.1:8443/"),
        &[],
        dir.path(),
        "merchant.log",
    );
    let addr = daemon.first_line["listening"].as_str().unwrap().to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let get = |origin: &'static str| {
        client
            .get(format!("http://{addr}/api/v1/open-orders"))
            .header("Origin", origin)
            .bearer_auth(&token)
            .send()
    };
    runtime.block_on(async {
        let ok = get("https://127.0.0.1:8443").await.unwrap();
        assert_eq!(ok.status().as_u16(), 200);
        assert_eq!(
            ok.headers()["access-control-allow-origin"],
            "https://127.0.0.1:8443"
        );
        let other = get("https://127.0.0.1:9443").await.unwrap();
        assert!(other.headers().get("access-control-allow-origin").is_none());
    });
    let revoked = merchant(&["device", "revoke", &added["id"].to_string()]);
    assert!(revoked["revoked_at"].is_i64(), "{revoked}");
    runtime.block_on(async {
        assert_eq!(
            get("https://127.0.0.1:8443")
                .await
                .unwrap()
                .status()
                .as_u16(),
            401
        );
    });
    daemon.terminate();
}
