//! Crash test with real `kill -9`.
//!
//! `ledger-load` pushes a deterministic workload through group commit and
//! prints each job's answer only after its commit. This test kills it with
//! SIGKILL at random moments, restarts it on the same file (resubmitting from
//! a little before the first unanswered job, so committed-but-unanswered and
//! already-answered jobs are both sent again), and finally lets one run finish
//! cleanly. Then: every job answered `approved` is in the ledger exactly
//! once with the expected fields, every job answered `declined` (and every
//! job never sent) left nothing, answers never change between runs, all
//! balances match the approved jobs, and the invariant checker passes.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{EUR, assert_consistent};
use ledger::{
    AccountFlags, AccountId, AccountKind, LedgerRead, LedgerStore, LedgerTx, NewAccount,
    SqliteReader, SqliteStore, TransferId, TransferKind, TransferRequest,
};

const KILLS: usize = 22;
const JOBS: usize = 40_000;
const CARDS: u128 = 16;
const SHOPS: u128 = 4;
/// Value loaded onto each card; an amount above it is always declined.
const LOADED: u64 = 1_000_000_000_000;
/// Already-answered jobs resubmitted after each restart.
const OVERLAP: usize = 40;
const FUNDING: AccountId = AccountId(1);

fn card(i: usize) -> AccountId {
    AccountId(0x100 + i as u128 % CARDS)
}

fn shop(i: usize) -> AccountId {
    AccountId(0x200 + i as u128 % SHOPS)
}

fn tid(i: usize, k: u128) -> TransferId {
    TransferId(((i as u128) << 8) | k)
}

fn amount(i: usize) -> u64 {
    1 + (i as u64 * 7_919) % 10_000
}

/// The workload, one job per index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    /// A sale.
    Sale,
    /// A pre-authorization completed for half its amount, in one job.
    PreauthCompleted,
    /// A pre-authorization cancelled, in one job.
    PreauthCancelled,
    /// A sale beyond the card's whole load: always declined.
    Overdraft,
    /// A sale followed by the void of an unknown hold: declined as a whole,
    /// so the sale must not be in the ledger either.
    HalfValid,
}

fn job(i: usize) -> Job {
    match (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60 {
        0..=5 => Job::Sale,
        6..=9 => Job::PreauthCompleted,
        10..=11 => Job::PreauthCancelled,
        12..=13 => Job::Overdraft,
        _ => Job::HalfValid,
    }
}

/// The job's transfers as `ledger-load` input.
fn job_line(i: usize) -> String {
    let (c, s, a) = (card(i).0, shop(i).0, amount(i));
    let t = |k| tid(i, k).0;
    let cur = EUR.0;
    match job(i) {
        Job::Sale => format!("single {:x} {c:x} {s:x} {a} {cur}", t(0)),
        Job::PreauthCompleted => format!(
            "pending {:x} {c:x} {s:x} {a} {cur};post {:x} {:x} {}",
            t(0),
            t(1),
            t(0),
            a / 2 + 1
        ),
        Job::PreauthCancelled => {
            format!(
                "pending {:x} {c:x} {s:x} {a} {cur};void {:x} {:x}",
                t(0),
                t(1),
                t(0)
            )
        }
        Job::Overdraft => format!("single {:x} {c:x} {s:x} {} {cur}", t(0), LOADED + 1),
        Job::HalfValid => format!(
            "single {:x} {c:x} {s:x} {a} {cur};void {:x} {:x}",
            t(0),
            t(1),
            tid(i, 0xFF).0
        ),
    }
}

/// What an approved job must have left: (transfer index, debited from card).
fn expected(i: usize) -> Vec<(u128, TransferKind, u64)> {
    let a = amount(i);
    match job(i) {
        Job::Sale => vec![(0, TransferKind::Single, a)],
        Job::PreauthCompleted => vec![
            (0, TransferKind::Pending, a),
            (
                1,
                TransferKind::Post {
                    pending_id: tid(i, 0),
                },
                a / 2 + 1,
            ),
        ],
        Job::PreauthCancelled => vec![
            (0, TransferKind::Pending, a),
            (
                1,
                TransferKind::Void {
                    pending_id: tid(i, 0),
                },
                a,
            ),
        ],
        Job::Overdraft | Job::HalfValid => vec![],
    }
}

/// Posted value a job moves from its card to its shop.
fn posted(i: usize) -> u64 {
    match job(i) {
        Job::Sale => amount(i),
        Job::PreauthCompleted => amount(i) / 2 + 1,
        _ => 0,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Approved,
    Declined(String),
}

/// splitmix64: the test's own randomness, seeded and printed for replay.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

fn setup(db: &Path, jobs: &Path) {
    let mut store = SqliteStore::open(db).unwrap();
    let mut tx = store.transaction().unwrap();
    tx.create_account(&NewAccount::new(FUNDING, EUR, AccountKind::Funding))
        .unwrap();
    for i in 0..CARDS as usize {
        let prepaid = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
        tx.create_account(&NewAccount::new(card(i), EUR, AccountKind::Card).flags(prepaid))
            .unwrap();
        let load = TransferRequest::single(
            TransferId(u128::MAX - i as u128),
            FUNDING,
            card(i),
            LOADED,
            EUR,
        );
        tx.create_transfer(&load).unwrap();
    }
    for i in 0..SHOPS as usize {
        tx.create_account(&NewAccount::new(shop(i), EUR, AccountKind::Merchant))
            .unwrap();
    }
    tx.commit().unwrap();
    let mut file = std::io::BufWriter::new(std::fs::File::create(jobs).unwrap());
    for i in 0..JOBS {
        writeln!(file, "{}", job_line(i)).unwrap();
    }
    file.flush().unwrap();
}

/// One run of `ledger-load`: killed after `kill_after` (counted from its
/// first answer), or left to finish when `None`. Returns its answers (with
/// whether the job was a replay) and whether it was killed by SIGKILL.
fn run(
    db: &Path,
    jobs: &Path,
    from: usize,
    to: usize,
    kill_after: Option<Duration>,
) -> (Vec<(usize, Answer, bool)>, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledger-load"))
        .arg(db)
        .arg(jobs)
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ledger-load");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            // A line cut by the kill is simply never completed.
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut answers = Vec::new();
    if let Some(delay) = kill_after {
        // Kill under load: after the first answer, a random moment later.
        if let Ok(first) = lines.recv_timeout(Duration::from_secs(20)) {
            answers.push(first);
        }
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL");
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    answers.extend(lines.try_iter());
    if kill_after.is_none() {
        assert!(status.success(), "final run failed: {status}");
    }
    let parsed = answers
        .iter()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let (verdict, n, detail) = (f.next()?, f.next()?.parse().ok()?, f.next()?);
            let answer = match verdict {
                "approved" => Answer::Approved,
                "declined" => Answer::Declined(detail.to_owned()),
                _ => return None,
            };
            Some((n, answer, detail == "replay"))
        })
        .collect();
    (parsed, status.signal() == Some(9))
}

#[test]
fn acknowledged_transfers_survive_kill_9_exactly_once() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let (db, jobs) = (dir.path().join("ledger.db"), dir.path().join("jobs.txt"));
    setup(&db, &jobs);

    let mut answered: HashMap<usize, Answer> = HashMap::new();
    let (mut from, mut kills, mut replays, mut highest) = (0usize, 0usize, 0usize, 0usize);
    let record = |answered: &mut HashMap<usize, Answer>, n: usize, a: Answer| {
        if let Some(before) = answered.insert(n, a.clone()) {
            assert_eq!(
                before, a,
                "job {n} answered differently after a restart (seed {seed})"
            );
        }
    };
    while kills < KILLS {
        let delay = Duration::from_millis(rng.below(120));
        let (answers, killed) = run(&db, &jobs, from, JOBS, Some(delay));
        assert!(
            killed,
            "the run ended before its kill; enlarge the workload (seed {seed})"
        );
        kills += 1;
        let mut this_run = std::collections::HashSet::new();
        for (n, answer, replay) in answers {
            replays += usize::from(replay);
            highest = highest.max(n);
            this_run.insert(n);
            record(&mut answered, n, answer);
        }
        let first_unanswered = (from..).find(|n| !this_run.contains(n)).unwrap();
        from = first_unanswered.saturating_sub(OVERLAP);
    }
    // Every job that may have been taken by a killed run lies below `to`:
    // each of the 64 submitting threads holds at most one job beyond the
    // answers, and at most one answered-but-unprinted one.
    let to = (highest + 1_024).min(JOBS);
    let (answers, _) = run(&db, &jobs, from, to, None);
    for (n, answer, replay) in answers {
        replays += usize::from(replay);
        record(&mut answered, n, answer);
    }
    assert!(
        replays >= KILLS * OVERLAP / 2,
        "resubmissions were replays: {replays} (seed {seed})"
    );

    let mut reader = SqliteReader::open(&db).unwrap();
    let mut card_debits = [0u64; CARDS as usize];
    let mut shop_credits = [0u64; SHOPS as usize];
    let mut approved_transfers = 0u64;
    for i in 0..to {
        let answer = answered
            .get(&i)
            .unwrap_or_else(|| panic!("job {i} never answered (seed {seed})"));
        let expect = expected(i);
        match (answer, job(i)) {
            (Answer::Approved, Job::Sale | Job::PreauthCompleted | Job::PreauthCancelled) => {}
            (Answer::Declined(code), Job::Overdraft) => assert_eq!(code, "ExceedsCredits"),
            (Answer::Declined(code), Job::HalfValid) => assert_eq!(code, "PendingTransferNotFound"),
            (answer, kind) => panic!("job {i} ({kind:?}) answered {answer:?} (seed {seed})"),
        }
        for k in 0..2 {
            let stored = reader.get_transfer(tid(i, k)).unwrap();
            match expect.iter().find(|e| e.0 == k) {
                Some(&(_, kind, amount)) => {
                    let t = stored.unwrap_or_else(|| {
                        panic!("approved job {i} lost transfer {k} (seed {seed})")
                    });
                    assert_eq!(
                        (t.kind, t.amount, t.debit_account, t.credit_account),
                        (kind, amount, card(i), shop(i))
                    );
                    approved_transfers += 1;
                }
                None => assert_eq!(stored, None, "job {i} left transfer {k} (seed {seed})"),
            }
        }
        card_debits[i % CARDS as usize] += posted(i);
        shop_credits[i % SHOPS as usize] += posted(i);
    }
    // Nothing beyond the last job ever sent, and no transfer unaccounted for.
    for i in to..(to + 2_048).min(JOBS) {
        assert_eq!(
            reader.get_transfer(tid(i, 0)).unwrap(),
            None,
            "job {i} was never sent"
        );
    }
    let report = assert_consistent(&mut reader);
    assert_eq!(
        report.transfers,
        CARDS as u64 + approved_transfers,
        "exactly once (seed {seed})"
    );
    for (i, &debits) in card_debits.iter().enumerate() {
        let b = reader.balances(card(i)).unwrap().unwrap();
        assert_eq!(
            (b.debits_posted, b.debits_pending, b.credits_posted),
            (debits, 0, LOADED)
        );
    }
    for (i, &credits) in shop_credits.iter().enumerate() {
        let b = reader.balances(shop(i)).unwrap().unwrap();
        assert_eq!((b.credits_posted, b.credits_pending), (credits, 0));
    }
    eprintln!(
        "crash test: {kills} kills, {to} jobs, {replays} replays, {approved_transfers} transfers"
    );
}
