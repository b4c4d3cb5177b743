//! `posnet phone`: the cashier's phone. Pairs with a terminal from the
//! code it shows, then pays, refunds, reverses and asks for lost answers
//! through it over HTTPS pinned to the terminal's certificate (crates/phone
//! does the work; this is the command line).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use phone::diagnose::Status as CheckStatus;
use phone::store::PairingStore;
use phone::transport::Timeouts;
use phone::{Event, Money, Options, Outcome, Phone, Summary, SupervisorCode};
use serde::Serialize;
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;
use zeroize::Zeroizing;

#[derive(Args)]
pub struct PhoneArgs {
    #[command(subcommand)]
    command: PhoneCommand,
    /// The phone's data directory (pairings, history).
    #[arg(
        long,
        env = "POSNET_PHONE_DATA_DIR",
        default_value = "posnet-data/phone",
        global = true
    )]
    data_dir: PathBuf,
    /// The paired terminal to use, by its POIID (the default pairing
    /// otherwise).
    #[arg(long, env = "POSNET_PHONE_TERMINAL", global = true)]
    terminal: Option<String>,
    /// Print one JSON document on stdout instead of text (progress goes
    /// to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to connect to the terminal (TCP, then TLS).
    #[arg(long, default_value_t = 5, global = true)]
    connect_timeout_secs: u64,
    /// Seconds to wait for the terminal's answer (the customer may take a
    /// while with the card and PIN).
    #[arg(long, default_value_t = 180, global = true)]
    answer_timeout_secs: u64,
    /// Do not follow the terminal's progress (one connection per request
    /// instead of two).
    #[arg(long, global = true)]
    no_progress: bool,
    /// Reach the terminal over this serial device (USB-serial
    /// `/dev/ttyUSB0`, Bluetooth `/dev/rfcomm0`) instead of HTTPS; the
    /// pairing still gives the terminal's POIID and key.
    #[arg(long, env = "POSNET_PHONE_DEVICE", global = true)]
    device: Option<String>,
    /// The serial device's baud rate.
    #[arg(long, default_value_t = 115_200, global = true)]
    baud: u32,
}

#[derive(Subcommand)]
enum PhoneCommand {
    /// Pair with a terminal: store the code it shows (posnet-pair://...);
    /// `-` reads the code from standard input, which keeps its passphrase
    /// out of the shell's history.
    Pair {
        /// The pairing code, or `-`.
        code: String,
        /// Check the pairing with a diagnosis before storing it.
        #[arg(long)]
        check: bool,
        /// Make it the default terminal (the first pairing always is).
        #[arg(long)]
        default: bool,
    },
    /// The paired terminals.
    Terminals,
    /// Make a paired terminal the default.
    Use {
        /// Its POIID.
        poi_id: String,
    },
    /// Forget a paired terminal.
    Unpair {
        /// Its POIID.
        poi_id: String,
    },
    /// Take a payment: the terminal's progress as it happens, then the
    /// result and the customer's receipt.
    Pay {
        /// Amount in major units: 12.50.
        amount: String,
        /// ISO 4217 currency.
        #[arg(long, default_value = "EUR")]
        currency: String,
    },
    /// Refund to the card of an earlier payment (a supervisor's code is
    /// required).
    Refund {
        /// Amount in major units: 12.50.
        amount: String,
        /// ISO 4217 currency.
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// The payment's terminal transaction id (POITransactionID).
        #[arg(long)]
        original: String,
        /// Its time stamp, when the payment is not in this phone's history.
        #[arg(long)]
        original_time: Option<String>,
        /// The supervisor's six-digit code.
        #[arg(long)]
        supervisor_code: String,
    },
    /// Reverse (cancel) an earlier payment (a supervisor's code is
    /// required).
    Reverse {
        /// The payment's terminal transaction id (POITransactionID).
        original: String,
        /// Its time stamp, when the payment is not in this phone's history.
        #[arg(long)]
        original_time: Option<String>,
        /// The supervisor's six-digit code.
        #[arg(long)]
        supervisor_code: String,
    },
    /// What became of an exchange of this phone, by its service id (as
    /// `pay` and `history` print it): the terminal repeats its answer.
    Status {
        /// The exchange's ServiceID.
        service_id: String,
    },
    /// This phone's own record of its exchanges, newest first.
    History {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Also status requests, diagnoses, logins and logouts.
        #[arg(long)]
        all: bool,
    },
    /// Check everything between the phone and its terminal, and say what
    /// to do about what fails.
    Diagnose,
    /// Log a cashier in at the terminal; later payments carry the
    /// operator.
    Login {
        /// The cashier's operator id.
        #[arg(long)]
        operator: String,
    },
    /// End the phone's session at the terminal.
    Logout,
}

/// Runs `posnet phone`.
pub fn run(args: PhoneArgs) -> Result<()> {
    let options = Options {
        terminal: args.terminal.clone(),
        timeouts: Timeouts {
            connect: Duration::from_secs(args.connect_timeout_secs.max(1)),
            answer: Duration::from_secs(args.answer_timeout_secs.max(1)),
        },
        progress: !args.no_progress,
        serial: args.device.clone().map(|device| (device, args.baud)),
        ..Options::new(&args.data_dir)
    };
    let out = Output { json: args.json };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match args.command {
            PhoneCommand::Pair {
                code,
                check,
                default,
            } => pair(options, &out, &code, check, default).await,
            PhoneCommand::Terminals => {
                let list = PairingStore::new(&options.data_dir).list()?;
                if out.json {
                    return out.document(&list);
                }
                for p in &list {
                    writeln!(
                        std::io::stdout(),
                        "{}{} at {}  certificate {}  key {} v{}  paired {}",
                        if p.default { "* " } else { "  " },
                        p.poi_id,
                        p.address,
                        p.fingerprint,
                        p.key_identifier,
                        p.key_version,
                        p.paired_at
                    )?;
                }
                Ok(())
            }
            PhoneCommand::Use { poi_id } => {
                PairingStore::new(&options.data_dir).set_default(&poi_id)?;
                out.line(&format!("{poi_id} is the default terminal"))
            }
            PhoneCommand::Unpair { poi_id } => {
                PairingStore::new(&options.data_dir).remove(&poi_id)?;
                out.line(&format!("{poi_id} is forgotten"))
            }
            PhoneCommand::Pay { amount, currency } => {
                let money = Money::parse(&amount, &currency)?;
                let mut phone = Phone::open(options)?;
                let outcome = phone.pay(&money, &mut out.progress()).await?;
                out.outcome(&outcome, &format!("payment of {money}"))
            }
            PhoneCommand::Refund {
                amount,
                currency,
                original,
                original_time,
                supervisor_code,
            } => {
                let money = Money::parse(&amount, &currency)?;
                let code = SupervisorCode::new(&supervisor_code)?;
                let mut phone = Phone::open(options)?;
                let outcome = phone
                    .refund(
                        &money,
                        &original,
                        original_time.as_deref(),
                        &code,
                        &mut out.progress(),
                    )
                    .await?;
                out.outcome(&outcome, &format!("refund of {money}"))
            }
            PhoneCommand::Reverse {
                original,
                original_time,
                supervisor_code,
            } => {
                let code = SupervisorCode::new(&supervisor_code)?;
                let mut phone = Phone::open(options)?;
                let outcome = phone
                    .reverse(
                        &original,
                        original_time.as_deref(),
                        &code,
                        &mut out.progress(),
                    )
                    .await?;
                out.outcome(&outcome, &format!("reversal of {original}"))
            }
            PhoneCommand::Status { service_id } => {
                let mut phone = Phone::open(options)?;
                status(&mut phone, &out, &service_id).await
            }
            PhoneCommand::History { limit, all } => history(&options, &out, limit, all),
            PhoneCommand::Diagnose => {
                let mut phone = Phone::open(options)?;
                let report = phone.diagnose().await;
                if out.json {
                    out.document(&report)?;
                } else {
                    writeln!(
                        std::io::stdout(),
                        "terminal {} at {} (this phone: {})",
                        report.poi_id,
                        report.address,
                        report.sale_id
                    )?;
                    for check in &report.checks {
                        let status = match check.status {
                            CheckStatus::Ok => "ok",
                            CheckStatus::Warning => "WARNING",
                            CheckStatus::Failed => "FAILED",
                            CheckStatus::Skipped => "skipped",
                        };
                        writeln!(
                            std::io::stdout(),
                            "  {status:<8} {}: {}",
                            check.name,
                            check.detail
                        )?;
                        if let Some(advice) = &check.advice {
                            writeln!(std::io::stdout(), "           → {advice}")?;
                        }
                    }
                }
                if !report.ok() {
                    bail!("the phone cannot pay through terminal {}", report.poi_id);
                }
                Ok(())
            }
            PhoneCommand::Login { operator } => {
                let mut phone = Phone::open(options)?;
                let outcome = phone.login(&operator, &mut out.progress()).await?;
                out.outcome(&outcome, &format!("login of {operator}"))
            }
            PhoneCommand::Logout => {
                let mut phone = Phone::open(options)?;
                let outcome = phone.logout(&mut out.progress()).await?;
                out.outcome(&outcome, "logout")
            }
        }
    })
}

/// How results are printed.
struct Output {
    json: bool,
}

impl Output {
    fn document<T: Serialize>(&self, value: &T) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut stdout, value)?;
        writeln!(stdout)?;
        Ok(())
    }

    fn line(&self, text: &str) -> Result<()> {
        if self.json {
            self.document(&serde_json::json!({ "message": text }))
        } else {
            writeln!(std::io::stdout(), "{text}")?;
            Ok(())
        }
    }

    /// Shows progress as it comes: on stdout for a person, on stderr
    /// beside a JSON document.
    fn progress(&self) -> impl FnMut(Event) + Send + use<> {
        let json = self.json;
        move |event| {
            let line = match event {
                Event::Progress(text) => format!("… {text}"),
                Event::Retry {
                    attempt,
                    pause,
                    reason,
                } => format!(
                    "… {}; trying again in {:.1} s (attempt {attempt})",
                    what_failed(&reason),
                    pause.as_secs_f32()
                ),
                Event::AnswerLost { reason } => format!(
                    "… the answer was lost ({reason}); asking the terminal what happened — the request is not sent again"
                ),
                Event::Asking { attempt, pause } if attempt > 1 => format!(
                    "… still in progress; asking again in {:.1} s",
                    pause.as_secs_f32()
                ),
                Event::Asking { .. } => return,
            };
            if json {
                eprintln!("{line}");
            } else {
                // A reader that went away must not stop the payment.
                let _ = writeln!(std::io::stdout(), "{line}");
            }
        }
    }

    /// Prints an outcome; an exchange the terminal did not carry out is
    /// an error (exit status 1) after its result is shown.
    fn outcome(&self, outcome: &Outcome, what: &str) -> Result<()> {
        let summary = outcome.summary();
        if self.json {
            self.document(&summary)?;
        } else {
            print_summary(&summary, what)?;
        }
        if !outcome.succeeded() {
            bail!("{what} not done: {}", summary.reason);
        }
        Ok(())
    }
}

/// The part of an error message that says what failed (before the
/// advice that follows ` — `).
fn what_failed(message: &str) -> &str {
    message.split(" — ").next().unwrap_or(message)
}

fn print_summary(s: &Summary, what: &str) -> std::io::Result<()> {
    if s.result == "Success" {
        let mut line = format!("{what}: done");
        for (label, value) in [
            ("amount", &s.amount),
            ("card", &s.masked_pan),
            ("approval", &s.approval_code),
            ("terminal transaction", &s.poi_transaction_id),
        ] {
            if let Some(v) = value {
                line.push_str(&format!(", {label} {v}"));
            }
        }
        writeln!(std::io::stdout(), "{line} (service {})", s.service_id)?;
    } else {
        writeln!(
            std::io::stdout(),
            "{what}: NOT DONE — {} (service {})",
            s.reason,
            s.service_id
        )?;
        if let Some(advice) = &s.advice {
            writeln!(std::io::stdout(), "what to do: {advice}")?;
        }
    }
    if let Some(why) = &s.recovered {
        writeln!(
            std::io::stdout(),
            "(the answer was lost — {why} — and was recovered from the terminal)"
        )?;
    }
    if !s.receipt.is_empty() {
        writeln!(std::io::stdout(), "---- customer receipt ----")?;
        for line in &s.receipt {
            writeln!(std::io::stdout(), "{line}")?;
        }
        writeln!(std::io::stdout(), "--------------------------")?;
    }
    Ok(())
}

async fn pair(
    options: Options,
    out: &Output,
    code: &str,
    check: bool,
    default: bool,
) -> Result<()> {
    let code = if code == "-" {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the pairing code from standard input")?;
        line
    } else {
        Zeroizing::new(code.to_owned())
    };
    let pairing = phone::Pairing::from_code(&code)?;
    if check {
        let mut phone = Phone::with_pairing(options.clone(), pairing.clone())?;
        let report = phone.diagnose().await;
        if let Some(failed) = report
            .checks
            .iter()
            .find(|c| c.status == CheckStatus::Failed)
        {
            bail!(
                "not paired: {}: {}{}",
                failed.name,
                failed.detail,
                failed
                    .advice
                    .as_deref()
                    .map(|a| format!(" → {a}"))
                    .unwrap_or_default()
            );
        }
    }
    let now = phone::timestamp_now();
    let is_default = PairingStore::new(&options.data_dir).add(&pairing, default, &now)?;
    let message = format!(
        "paired with terminal {} at {}:{} (certificate {}, key {} v{}){}{}",
        pairing.poi_id,
        pairing.host,
        pairing.port,
        pairing.fingerprint(),
        pairing.key_identifier,
        pairing.key_version,
        if is_default { ", the default" } else { "" },
        if check { ", checked" } else { "" }
    );
    if out.json {
        out.document(&serde_json::json!({
            "poi_id": pairing.poi_id,
            "host": pairing.host,
            "port": pairing.port,
            "fingerprint": pairing.fingerprint(),
            "key_identifier": pairing.key_identifier,
            "key_version": pairing.key_version,
            "default": is_default,
            "checked": check,
        }))
    } else {
        writeln!(std::io::stdout(), "{message}")?;
        Ok(())
    }
}

async fn status(phone: &mut Phone, out: &Output, service_id: &str) -> Result<()> {
    let report = phone.status(service_id, &mut out.progress()).await?;
    let repeated = report
        .repeated
        .as_ref()
        .map(|r| Summary::of(service_id, &r.body, None));
    if out.json {
        return out.document(&serde_json::json!({
            "service_id": service_id,
            "result": report.status.response.result.to_string(),
            "error_condition": report.status.response.error_condition.map(|c| c.to_string()),
            "reason": phone::explain::reason(&report.status.response),
            "repeated": repeated,
            "mismatches": report.mismatches.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
    }
    match &repeated {
        Some(summary) => {
            writeln!(
                std::io::stdout(),
                "the terminal repeats its answer to {service_id}:"
            )?;
            print_summary(summary, &format!("{} {service_id}", summary.category))?;
        }
        None => writeln!(
            std::io::stdout(),
            "{service_id}: {}",
            phone::explain::reason(&report.status.response)
        )?,
    }
    if !report.mismatches.is_empty() {
        bail!(
            "the terminal's answer is not this phone's exchange {service_id}: {}",
            phone::check::describe(&report.mismatches)
        );
    }
    Ok(())
}

fn history(options: &Options, out: &Output, limit: u32, all: bool) -> Result<()> {
    let history = phone::history::History::open(&options.data_dir)?;
    // Status requests, diagnoses and sessions are only shown with --all.
    let records = if all {
        history.list(limit)?
    } else {
        history.transactions(limit)?
    };
    if out.json {
        return out.document(&records);
    }
    for r in &records {
        let amount = match (r.amount_minor, r.currency.as_deref()) {
            (Some(minor), Some(currency)) => Money::from_minor(minor, currency)
                .map(|m| m.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let state = serde_json::to_value(r.state)?;
        let kind = serde_json::to_value(r.kind)?;
        writeln!(
            std::io::stdout(),
            "{}  {}  {:<9} {:>14}  {:<12} {:<40} {}  {}",
            r.started_at,
            r.service_id,
            kind.as_str().unwrap_or_default(),
            amount,
            state.as_str().unwrap_or_default(),
            r.reason
                .as_deref()
                .map(what_failed)
                .or(r.result.as_deref())
                .unwrap_or("-"),
            r.poi_transaction_id.as_deref().unwrap_or("-"),
            r.masked_pan.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}
