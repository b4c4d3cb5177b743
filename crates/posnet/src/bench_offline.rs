//! `posnet bench offline`: how fast terminals forward the sales they
//! approved offline once their host is back.
//!
//! The host runs as a child process on a fixed loopback port (so that it
//! can stop and come back where the terminals look for it); the terminals
//! are the real terminal runtime in this process, each with its own
//! journal, connecting over mutual TLS, signing on, approving under their
//! floor limit while the host is away, and forwarding 0220 advices from
//! their store-and-forward queue when it returns.

use crate::bench_cmd::{HostAt, WorkDir, counting_bar, machine, start_host, stop_host};
use anyhow::{Context, Result, bail};
use loadgen::{FleetSpec, enroll_fleet};
use serde_json::json;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use terminal::card::PresentedCard;
use terminal::engine::{CardData, Entry, Method};
use terminal::{Outcome, Status, Terminal, TerminalOptions, TxnKind, TxnRequest};
use tokio::sync::watch;

/// Each terminal's offline floor (10,000.00): high enough that every
/// offline sale of the run is under it and their total under the
/// terminal's limit of ten floors.
const OFFLINE_FLOOR: u64 = 1_000_000;

/// How long the terminals may take to reach a state (sign on, notice
/// the host is gone, forward everything): a safety net, not a measure.
const STATE_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs the offline benchmark.
pub async fn run(
    terminals: usize,
    advices: u32,
    work_dir: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    if terminals == 0 || advices == 0 {
        bail!("need at least one terminal and one advice");
    }
    let work = WorkDir::new(work_dir)?;
    let listen = free_port()?;
    let (mut daemon, host) = start_host(work.path(), listen, terminals).await?;
    let result = offline_then_forward(&host, &mut daemon, work.path(), terminals, advices).await;
    stop_host(&mut daemon).await?;
    let run = result?;
    let total = u64::from(advices) * terminals as u64;
    let forward_rate = total as f64 / run.forwarded.as_secs_f64().max(1e-9);
    let offline_rate = total as f64 / run.approved_offline.as_secs_f64().max(1e-9);
    if json {
        let v = json!({
            "terminals": terminals,
            "advices": total,
            "offline_approval_seconds": run.approved_offline.as_secs_f64(),
            "offline_approvals_per_second": offline_rate,
            "forward_seconds": run.forwarded.as_secs_f64(),
            "advices_per_second": forward_rate,
            "host_offline_sales": run.host_rows,
            "machine": machine(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{terminals} terminals approved {total} sales offline in {:.2} s ({offline_rate:.0}/s); with the host back, every advice was forwarded within {:.2} s, reconnection and sign-on included ({forward_rate:.0} advices/s); the host recorded {} offline sales",
            run.approved_offline.as_secs_f64(),
            run.forwarded.as_secs_f64(),
            run.host_rows,
        );
    }
    if run.host_rows != total {
        bail!(
            "the host recorded {} offline sales of the {total} the terminals approved",
            run.host_rows
        );
    }
    Ok(())
}

/// What the run measured.
struct OfflineRun {
    approved_offline: Duration,
    /// From the host's restart until every advice was forwarded.
    forwarded: Duration,
    host_rows: u64,
}

async fn offline_then_forward(
    host: &HostAt,
    daemon: &mut crate::children::Daemon,
    dir: &std::path::Path,
    terminals: usize,
    advices: u32,
) -> Result<OfflineRun> {
    let data = host.open()?;
    let mut spec = FleetSpec::new(terminals, host.addr.to_string());
    spec.terminal_prefix = "OF".into();
    spec.with_pin = false;
    spec.offline_floor = OFFLINE_FLOOR;
    let fleet = enroll_fleet(&data, &spec).await?;
    let ktk = data.deployment.ktk();
    let (stop, stopped) = watch::channel(false);
    let mut fleet_terminals = Vec::with_capacity(terminals);
    for (i, bundle) in fleet.bundles.iter().enumerate() {
        let options = TerminalOptions {
            data_dir: dir.join("terminals").join(i.to_string()),
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(100),
        };
        let terminal = Terminal::open(bundle.clone(), ktk.expose(), options)
            .with_context(|| format!("opening terminal {i}"))?;
        let t = terminal.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move { t.supervise(stopped).await });
        fleet_terminals.push(terminal);
    }
    data.ledger.shutdown().await;
    all(&fleet_terminals, "sign on", |s| s.online).await?;

    stop_host(daemon).await?;
    all(&fleet_terminals, "notice the host is gone", |s| !s.online).await?;

    let bar = counting_bar(u64::from(advices) * terminals as u64);
    bar.set_message("approving offline");
    let started = Instant::now();
    let mut sales = tokio::task::JoinSet::new();
    for (terminal, card) in fleet_terminals
        .iter()
        .cloned()
        .zip(fleet.cards.iter().cycle())
    {
        let pan = card.pan.clone();
        let bar = bar.clone();
        sales.spawn(async move {
            for k in 0..advices {
                let req = TxnRequest {
                    kind: TxnKind::Sale,
                    amount: 100 + u64::from(k % 100),
                    method: Method::Card,
                    original: None,
                };
                let presented = PresentedCard {
                    card: CardData {
                        pan: pan.clone(),
                        expiry: "3012".into(),
                        entry: Entry::Chip,
                        offline_allowed: true,
                    },
                    pin: None,
                };
                let result = terminal.transact(req, Ok(presented)).await?;
                if result.outcome != Outcome::ApprovedOffline {
                    bail!(
                        "terminal {} did not approve offline: {:?}",
                        terminal.terminal_id(),
                        result.outcome
                    );
                }
                bar.inc(1);
            }
            Ok(())
        });
    }
    while let Some(done) = sales.join_next().await {
        done??;
    }
    let approved_offline = started.elapsed();

    bar.set_position(0);
    bar.set_message("forwarding");
    let (back, _) = start_host(dir, host.addr, terminals).await?;
    *daemon = back;
    let restarted = Instant::now();
    let total = u64::from(advices) * terminals as u64;
    let progress = {
        let bar = bar.clone();
        let watched = fleet_terminals.clone();
        tokio::spawn(async move {
            loop {
                let pending: u64 = watched
                    .iter()
                    .map(|t| t.status().borrow().pending_saf as u64)
                    .sum();
                bar.set_position(total.saturating_sub(pending));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let forwarded = all(&fleet_terminals, "forward every advice", |s| {
        s.online && s.pending_saf == 0
    })
    .await;
    progress.abort();
    bar.finish_and_clear();
    let forwarded = forwarded.map(|()| restarted.elapsed())?;
    let _ = stop.send(true);

    let host_rows: i64 = rusqlite::Connection::open_with_flags(
        host.data_dir.join(host::runtime::DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?
    .query_row(
        "SELECT count(*) FROM journal WHERE kind = 'offline_sale' AND terminal_id LIKE 'OF%'",
        [],
        |r| r.get(0),
    )?;
    Ok(OfflineRun {
        approved_offline,
        forwarded,
        host_rows: u64::try_from(host_rows).unwrap_or(0),
    })
}

/// Waits until every terminal's status satisfies `pred` (bounded).
async fn all(terminals: &[Terminal], what: &str, pred: impl Fn(&Status) -> bool) -> Result<()> {
    let wait = async {
        for t in terminals {
            let mut status = t.status();
            while !pred(&status.borrow_and_update()) {
                if status.changed().await.is_err() {
                    bail!("terminal {} stopped", t.terminal_id());
                }
            }
        }
        Ok(())
    };
    tokio::time::timeout(STATE_TIMEOUT, wait)
        .await
        .with_context(|| {
            format!(
                "the terminals did not {what} within {} s",
                STATE_TIMEOUT.as_secs()
            )
        })?
}

/// A loopback address with a port free right now, for a host that must
/// come back on the same one.
fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}
