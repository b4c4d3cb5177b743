//! `posnet wallet code` as a wallet holder runs it: the wallet file made by
//! `posnet host wallet add` gives the payment code of now on standard
//! output (the host accepts it) and the same code as a QR code on
//! standard error; a file that is not a wallet's is refused.

use paycrypto::paycode::{PaymentCode, Verdict, WalletNumber};
use std::process::{Command, Output};

fn wallet_code(file: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_posnet"))
        .args(["wallet", "code", "--secret-file"])
        .arg(file)
        .output()
        .expect("posnet runs")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn the_code_is_the_wallets_code_of_now_with_its_qr_code() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wallet.json");
    let secret = b"a wallet's secret, 20";
    std::fs::write(
        &file,
        serde_json::json!({ "wallet": "100000001", "secret": hex::encode(secret) }).to_string(),
    )
    .unwrap();
    let out = wallet_code(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let code = PaymentCode::parse(printed.trim()).expect("19 digits starting 69");
    let wallet = WalletNumber::parse("100000001").unwrap();
    assert_eq!(code.wallet(), wallet);
    let totp = wallet.generator(secret).unwrap();
    assert!(
        matches!(code.check(&totp, unix_now(), None), Verdict::Valid { .. }),
        "{printed}"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains('█'), "a QR code on stderr: {stderr}");

    std::fs::write(&file, r#"{"wallet": "12", "secret": "00"}"#).unwrap();
    let refused = wallet_code(&file);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("wallet number"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
