//! `posnet wallet`: what a wallet app does with payment codes, on the
//! command line. `posnet host wallet add` gives the holder a wallet file
//! (its number and TOTP secret, 0600); `posnet wallet code` shows the
//! wallet's current payment code (paycrypto::paycode) as digits and as a
//! QR code for the terminal to scan.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use paycrypto::paycode::{PaymentCode, WalletNumber};
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, Zeroizing};

#[derive(Args)]
pub struct WalletArgs {
    #[command(subcommand)]
    command: WalletCommand,
}

#[derive(Subcommand)]
enum WalletCommand {
    /// Print the wallet's current payment code on standard output (for
    /// `$(...)` in a shell) and the same code as a QR code on standard
    /// error. Each code pays once, for about a minute.
    Code {
        /// The wallet file `posnet host wallet add --secret-out` wrote.
        #[arg(long)]
        secret_file: PathBuf,
    },
}

/// A wallet's number and secret as its holder keeps them: a JSON file,
/// owner-only, made once when the wallet is created.
#[derive(Serialize, Deserialize)]
pub struct WalletFile {
    /// The wallet number, 9 digits.
    pub wallet: String,
    /// The TOTP secret, hex.
    pub secret: String,
}

impl Drop for WalletFile {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl WalletFile {
    /// Writes the wallet file of `number` with `secret` to a new 0600 file.
    pub fn write(path: &Path, number: &str, secret: &[u8]) -> Result<()> {
        let file = WalletFile {
            wallet: number.to_string(),
            secret: hex::encode(secret),
        };
        let json = Zeroizing::new(serde_json::to_vec_pretty(&file)?);
        pki::seal::write_private(path, &json).with_context(|| format!("writing {}", path.display()))
    }

    /// The wallet's payment code at the current time.
    pub fn current_code(path: &Path) -> Result<PaymentCode> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
        let file: WalletFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a posnet wallet file", path.display()))?;
        let number = WalletNumber::parse(&file.wallet)
            .with_context(|| format!("{}: wallet number", path.display()))?;
        let secret = Zeroizing::new(
            hex::decode(&file.secret).with_context(|| format!("{}: secret", path.display()))?,
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        number
            .code_at(&secret, now)
            .with_context(|| format!("{}: secret", path.display()))
    }
}

/// Prints `code` on standard output and its QR code on standard error.
pub fn print_code(code: &PaymentCode) -> Result<()> {
    let text = code.to_string();
    let qr = terminal::screen::text_qr(&text).context("drawing the QR code")?;
    writeln!(std::io::stdout().lock(), "{text}")?;
    // The QR code is for eyes and scanners: a failed write to stderr
    // does not lose the code.
    let _ = writeln!(
        std::io::stderr().lock(),
        "{qr}\nscan it at a terminal, or: posnet terminal pay --amount <minor units> --qr {text}\nit pays once, for about a minute"
    );
    Ok(())
}

/// Runs `posnet wallet`.
pub fn run(args: WalletArgs) -> Result<()> {
    match args.command {
        WalletCommand::Code { secret_file } => print_code(&WalletFile::current_code(&secret_file)?),
    }
}
