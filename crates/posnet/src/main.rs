//! `posnet`: the one binary of the posnet payment system, with a subcommand
//! for each component and for the engineer's everyday tools.

#[cfg(unix)]
mod bench_cmd;
#[cfg(unix)]
mod bench_offline;
#[cfg(unix)]
mod children;
mod crypto_cmd;
#[cfg(unix)]
mod demo_cmd;
mod host_cmd;
mod iso8583_cmd;
mod merchant_cmd;
mod phone_cmd;
mod terminal_cmd;
mod wallet_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// A networked point-of-sale payment system: phone, terminal, payment host
/// and merchant back office, speaking nexo, ISO 8583 and signed webhooks.
#[derive(Parser)]
#[command(name = "posnet", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole system on this machine in one command: host, back office,
    /// two terminals and a paired phone, ready for a first payment.
    #[cfg(unix)]
    Demo(demo_cmd::DemoArgs),
    /// Decode and encode ISO 8583 messages (read traces, build test messages).
    #[command(name = "iso8583")]
    Iso8583(iso8583_cmd::Iso8583Args),
    /// The deployment's certificate authority and keys.
    Ca(host_cmd::CaArgs),
    /// The payment host: run it, enroll terminals, manage accounts.
    Host(host_cmd::HostArgs),
    /// The POS terminal: run it with its screen page, pay, settle, receipts.
    Terminal(terminal_cmd::TerminalArgs),
    /// The cashier's phone: pair with a terminal, pay, refund, reverse,
    /// recover lost answers, history, diagnosis.
    Phone(phone_cmd::PhoneArgs),
    /// The merchant's back office: web pages, the host's webhooks, backfill,
    /// reconciliation, users, audit log.
    Merchant(merchant_cmd::MerchantArgs),
    /// Load runs against a payment host: durable authorizations per
    /// second, latency, scaling with connections, the host's memory.
    #[cfg(unix)]
    Bench(bench_cmd::BenchArgs),
    /// Payment cryptography calculator: DUKPT, PIN blocks, MACs, TR-31, KCVs, nexo.
    Crypto(crypto_cmd::CryptoArgs),
    /// A wallet holder's side: show the wallet's payment code to scan.
    Wallet(wallet_cmd::WalletArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A benchmark's own output is its result: only warnings besides.
    #[cfg(unix)]
    let quiet = matches!(cli.command, Command::Bench(_));
    #[cfg(not(unix))]
    let quiet = false;
    init_logging(if quiet { "warn" } else { "info" });
    let result = match cli.command {
        Command::Ca(args) => host_cmd::run_ca(args),
        Command::Host(args) => host_cmd::run_host(args),
        Command::Iso8583(args) => iso8583_cmd::run(args),
        Command::Crypto(args) => crypto_cmd::run(args),
        Command::Terminal(args) => terminal_cmd::run(args),
        Command::Merchant(args) => merchant_cmd::run(args),
        Command::Phone(args) => phone_cmd::run(args),
        Command::Wallet(args) => wallet_cmd::run(args),
        #[cfg(unix)]
        Command::Demo(args) => demo_cmd::run(args),
        #[cfg(unix)]
        Command::Bench(args) => bench_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stops early (`| head`) is not a failure.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("posnet: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Logs to stderr; `POSNET_LOG` (or `RUST_LOG`) sets the filter, `info` by default.
fn init_logging(default: &str) {
    let filter = std::env::var("POSNET_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
