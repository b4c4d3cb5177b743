//! `ledger-load`: pushes a workload of transfer jobs into a ledger file
//! through group commit, as fast as it can, and prints each job's answer only
//! after the commit that made it durable. Used by the crash test (which kills
//! it at random moments) and for load trials by hand.
//!
//! ```text
//! ledger-load <ledger.db> <jobs.txt> [--from N] [--to M] [--threads T]
//! ```
//!
//! `jobs.txt` holds one job per line: transfers separated by `;`, each one of
//! (ids and accounts in hex, amounts in decimal, currency ISO 4217 numeric)
//!
//! ```text
//! single  <id> <debit> <credit> <amount> <currency>
//! pending <id> <debit> <credit> <amount> <currency>
//! post    <id> <pending-id> <amount>
//! void    <id> <pending-id>
//! ```
//!
//! A job commits all its transfers or none. For each job `N` from `--from`
//! up to (not including) `--to` or the end of the file, stdout gets
//! `approved N new`, `approved N replay` (every transfer of the job existed
//! already: an idempotent resubmission) or `declined N <code>`. Jobs that did
//! not finish are never printed. Accounts must exist already.

use std::io::Write;
use std::ops::Not;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ledger::{
    AccountId, Currency, GroupCommit, GroupCommitConfig, LedgerTx, SqliteStore, SubmitError,
    TransferError, TransferId, TransferRequest,
};

/// Longest jobs file accepted: the whole workload is held in memory.
const MAX_JOBS: usize = 1_000_000;
/// Most submitting threads: each is an OS thread blocked on its job.
const MAX_THREADS: usize = 1_024;

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("usage: ledger-load <ledger.db> <jobs.txt> [--from N] [--to M] [--threads T]")]
    Usage,
    #[error("jobs file line {line}: {what}")]
    Job { line: usize, what: String },
    #[error("reading the jobs file: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] ledger::StoreError),
    #[error("job {0}: {1}")]
    Submit(usize, SubmitError<TransferError>),
    #[error("a submitting thread panicked")]
    WorkerPanicked,
}

fn hex(s: Option<&str>, what: &str) -> Result<u128, String> {
    let s = s.ok_or_else(|| format!("missing {what}"))?;
    u128::from_str_radix(s, 16).map_err(|e| format!("{what} {s:?}: {e}"))
}

fn dec<T: std::str::FromStr>(s: Option<&str>, what: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let s = s.ok_or_else(|| format!("missing {what}"))?;
    s.parse().map_err(|e| format!("{what} {s:?}: {e}"))
}

fn parse_transfer(text: &str) -> Result<TransferRequest, String> {
    let mut f = text.split_whitespace();
    let verb = f.next().ok_or("empty transfer")?;
    let id = TransferId(hex(f.next(), "id")?);
    let req = match verb {
        "single" | "pending" => {
            let debit = AccountId(hex(f.next(), "debit account")?);
            let credit = AccountId(hex(f.next(), "credit account")?);
            let amount = dec(f.next(), "amount")?;
            let currency = Currency(dec(f.next(), "currency")?);
            if verb == "single" {
                TransferRequest::single(id, debit, credit, amount, currency)
            } else {
                TransferRequest::pending(id, debit, credit, amount, currency)
            }
        }
        "post" => TransferRequest::post(
            id,
            TransferId(hex(f.next(), "pending id")?),
            dec(f.next(), "amount")?,
        ),
        "void" => TransferRequest::void(id, TransferId(hex(f.next(), "pending id")?)),
        other => return Err(format!("unknown transfer kind {other:?}")),
    };
    match f.next() {
        Some(extra) => Err(format!("unexpected {extra:?}")),
        None => Ok(req),
    }
}

fn parse_jobs(text: &str) -> Result<Vec<Vec<TransferRequest>>, LoadError> {
    let mut jobs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if jobs.len() == MAX_JOBS {
            return Err(LoadError::Job {
                line: i + 1,
                what: format!("more than {MAX_JOBS} jobs"),
            });
        }
        let job = line
            .split(';')
            .map(parse_transfer)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|what| LoadError::Job { line: i + 1, what })?;
        jobs.push(job);
    }
    Ok(jobs)
}

fn run() -> Result<(), LoadError> {
    let mut args = std::env::args().skip(1);
    let (Some(db), Some(jobs_path)) = (args.next(), args.next()) else {
        return Err(LoadError::Usage);
    };
    let (mut from, mut to, mut threads) = (0usize, usize::MAX, 64usize);
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (flag.as_str(), value) {
            ("--from", Some(v)) => from = v,
            ("--to", Some(v)) => to = v,
            ("--threads", Some(v)) if (1..=MAX_THREADS).contains(&v) => threads = v,
            _ => return Err(LoadError::Usage),
        }
    }
    let mut jobs = parse_jobs(&std::fs::read_to_string(jobs_path)?)?;
    jobs.truncate(to);
    let jobs = Arc::new(jobs);
    let ledger = GroupCommit::start(SqliteStore::open(db)?, GroupCommitConfig::default());
    let next = Arc::new(AtomicUsize::new(from));

    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (ledger, jobs, next) = (ledger.clone(), jobs.clone(), next.clone());
            std::thread::spawn(move || -> Result<(), LoadError> {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(n).cloned() else {
                        return Ok(());
                    };
                    let answer = ledger.submit_blocking(move |tx| {
                        job.iter().try_fold(true, |replay, req| {
                            Ok(tx.create_transfer(req)?.is_created().not() && replay)
                        })
                    });
                    // Printed only now, after the commit: a line on stdout is
                    // an answer the ledger has made durable.
                    let line = match answer {
                        Ok(false) => format!("approved {n} new"),
                        Ok(true) => format!("approved {n} replay"),
                        Err(SubmitError::Job(TransferError::Rejected { rejection, .. })) => {
                            format!("declined {n} {rejection:?}")
                        }
                        Err(e) => return Err(LoadError::Submit(n, e)),
                    };
                    writeln!(std::io::stdout().lock(), "{line}")?;
                }
            })
        })
        .collect();
    let mut result = Ok(());
    for worker in workers {
        let outcome = worker.join().unwrap_or(Err(LoadError::WorkerPanicked));
        result = result.and(outcome);
    }
    result
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ledger-load: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_each_kind_and_rejects_junk() {
        let jobs =
            parse_jobs("single a 1 2 5 978;post b a 3\npending c 1 2 7 978;void d c\n").unwrap();
        let expected = [
            vec![
                TransferRequest::single(
                    TransferId(10),
                    AccountId(1),
                    AccountId(2),
                    5,
                    Currency(978),
                ),
                TransferRequest::post(TransferId(11), TransferId(10), 3),
            ],
            vec![
                TransferRequest::pending(
                    TransferId(12),
                    AccountId(1),
                    AccountId(2),
                    7,
                    Currency(978),
                ),
                TransferRequest::void(TransferId(13), TransferId(12)),
            ],
        ];
        assert_eq!(jobs, expected);
        assert_eq!(parse_jobs("").unwrap(), Vec::<Vec<TransferRequest>>::new());
        for bad in [
            " ",
            "single a 1 2 5",
            "single a 1 2 5 978 9",
            "post x",
            "refund a b 1",
            "void g0 1",
        ] {
            assert!(
                matches!(parse_jobs(bad), Err(LoadError::Job { line: 1, .. })),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in "\\PC{0,200}") {
            let _ = parse_jobs(&text);
        }

        #[test]
        fn parser_never_panics_on_near_valid_lines(
            words in prop::collection::vec(
                prop_oneof![
                    Just("single".to_owned()), Just("pending".to_owned()), Just("post".to_owned()),
                    Just("void".to_owned()), Just(";".to_owned()), "[0-9a-fA-F]{0,40}", "-?[0-9]{0,25}",
                ],
                0..16,
            )
        ) {
            let _ = parse_jobs(&words.join(" "));
        }
    }
}
