//! What the terminals saw against the host's books, read-only: after a run
//! (with [`crate::LoadConfig::keep_records`]), every answer a terminal
//! received must be the one the host's journal holds, money must have moved
//! only for approvals, each card's balance must be its opening balance less
//! what the terminals know they spent, the ledger's invariants must hold,
//! and every journal row must have exactly one outbox event.

use crate::driver::{Op, Outcome, Record};
use crate::message::Card;
use host::issuer::IssuerKeys;
use ledger::rusqlite::{self, Connection, OpenFlags, OptionalExtension, params};
use ledger::{AccountId, LedgerRead, SqliteReader};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Most problems listed in a report; the count goes on beyond it.
const MAX_LISTED: usize = 50;

/// The books could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// SQLite failed on the host tables.
    #[error("host database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The ledger could not be read.
    #[error("ledger: {0}")]
    Ledger(#[from] ledger::StoreError),
}

/// Findings of an audit.
#[derive(Debug, Default)]
pub struct AuditReport {
    /// Records compared with the journal.
    pub records: u64,
    /// Journal rows of the audited terminals.
    pub journal_rows: u64,
    /// Sales the terminals saw approved.
    pub approved_sales: u64,
    /// Sales whose answer was lost and that were reversed.
    pub reversed_unknowns: u64,
    /// Cards whose balance was checked.
    pub cards: u64,
    /// Everything that disagrees (the first [`MAX_LISTED`]).
    pub problems: Vec<String>,
    /// How many problems there were in all.
    pub problem_count: u64,
}

impl AuditReport {
    /// Whether the books agree with the terminals.
    pub fn is_clean(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(text);
        }
    }
}

/// One journal row.
#[derive(Debug)]
struct Row {
    kind: String,
    amount: u64,
    response_code: String,
    rrn: String,
    transfer: bool,
    state: String,
}

type Key = (String, String, u32, u32);

fn key(terminal: &str, mti: &str, stan: u32, batch: u32) -> Key {
    (terminal.to_string(), mti.to_string(), stan, batch)
}

/// Compares `records` (of terminals whose cards are `cards`, each loaded
/// with `opening` at the start) with the host database at `db`; `issuer`
/// gives the cards' tokens. Reads only.
pub fn audit(
    db: &Path,
    records: &[Record],
    cards: &[Card],
    opening: u64,
    issuer: &IssuerKeys,
) -> Result<AuditReport, AuditError> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mut report = AuditReport {
        records: records.len() as u64,
        ..AuditReport::default()
    };
    let terminals: HashSet<&str> = records.iter().map(|r| r.terminal_id.as_str()).collect();
    let mut journal: HashMap<Key, Row> = HashMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT terminal_id, mti, stan, batch, kind, amount, response_code, rrn, transfer_id IS NOT NULL, state FROM journal",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                key(
                    &r.get::<_, String>(0)?,
                    &r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                ),
                Row {
                    kind: r.get(4)?,
                    amount: r.get::<_, i64>(5)? as u64,
                    response_code: r.get(6)?,
                    rrn: r.get(7)?,
                    transfer: r.get(8)?,
                    state: r.get(9)?,
                },
            ))
        })?;
        for row in rows {
            let (k, row) = row?;
            if terminals.contains(k.0.as_str()) {
                journal.insert(k, row);
            }
        }
    }
    report.journal_rows = journal.len() as u64;

    // What the terminals did to each approved sale afterwards.
    let mut reversed: HashSet<(String, u32, u32)> = HashSet::new();
    let mut refunded: HashSet<(String, u32, u32)> = HashSet::new();
    for r in records.iter().filter(|r| r.approved()) {
        let Some(original) = r.original_stan else {
            continue;
        };
        let target = match r.op {
            Op::Reversal => &mut reversed,
            Op::Refund => &mut refunded,
            _ => continue,
        };
        target.insert((r.terminal_id.clone(), original, r.batch));
    }

    let mut spent = vec![0i128; cards.len()];
    let mut seen: HashSet<Key> = HashSet::new();
    for r in records {
        let k = key(&r.terminal_id, r.mti, r.stan, r.batch);
        let row = journal.get(&k);
        let what = format!(
            "{} {:?} STAN {} batch {}",
            r.terminal_id, r.op, r.stan, r.batch
        );
        seen.insert(k);
        match &r.outcome {
            Outcome::Unresolved => report.problem(format!("{what}: never settled")),
            Outcome::Lost => {
                if let Some(row) = row.filter(|row| row.transfer) {
                    report.problem(format!("{what}: lost, but moved money: {row:?}"));
                }
            }
            Outcome::Answered { code, rrn } if code == "00" => {
                let Some(row) = row else {
                    report.problem(format!("{what}: approved, not in the journal"));
                    continue;
                };
                if row.response_code != "00" || rrn.as_deref().is_some_and(|x| *x != row.rrn) {
                    report.problem(format!(
                        "{what}: approved with RRN {rrn:?}, journal says {} with RRN {}",
                        row.response_code, row.rrn
                    ));
                }
                let original = (r.terminal_id.clone(), r.stan, r.batch);
                let (expected_state, moves_money) = match r.op {
                    Op::Sale if reversed.contains(&original) => ("reversed", true),
                    Op::Sale if refunded.contains(&original) => ("refunded", true),
                    Op::Sale | Op::Refund => ("approved", true),
                    Op::Reversal => ("approved", true),
                    Op::Balance => ("approved", false),
                };
                if row.state != expected_state
                    || row.transfer != moves_money
                    || row.amount != r.amount
                    || row.kind != r.op.name()
                {
                    report.problem(format!(
                        "{what}: expected {} {expected_state} of {} with a transfer: {moves_money}, journal has {row:?}",
                        r.op.name(),
                        r.amount
                    ));
                }
                match r.op {
                    Op::Sale => {
                        report.approved_sales += 1;
                        if expected_state != "reversed" {
                            spent[r.card] += i128::from(r.amount);
                        }
                    }
                    Op::Refund => spent[r.card] -= i128::from(r.amount),
                    Op::Reversal | Op::Balance => {}
                }
            }
            Outcome::Answered { code, .. } => {
                // Declined: either never journaled (an early answer) or
                // journaled as declined with the same code and no transfer.
                if let Some(row) = row
                    && (row.response_code != *code || row.transfer || row.state == "approved")
                {
                    report.problem(format!("{what}: declined {code}, journal has {row:?}"));
                }
            }
            Outcome::Reversed { code } => {
                report.reversed_unknowns += 1;
                let rk = key(&r.terminal_id, "0400", r.stan, r.batch);
                match journal.get(&rk) {
                    Some(rev) if rev.response_code == *code => {}
                    other => report.problem(format!(
                        "{what}: its reversal was answered {code}, journal has {other:?}"
                    )),
                }
                seen.insert(rk);
                if let Some(row) = row
                    && !(row.state == "reversed" || (row.state == "declined" && !row.transfer))
                {
                    report.problem(format!(
                        "{what}: lost and reversed ({code}), but the journal has {row:?}"
                    ));
                }
            }
        }
    }
    // Nothing happened that no terminal asked for.
    for (k, row) in &journal {
        if !seen.contains(k) {
            report.problem(format!(
                "journal row {k:?} that no terminal recorded: {row:?}"
            ));
        }
    }

    // Money: each card holds its opening balance less what was spent.
    let mut reader = SqliteReader::open(db)?;
    for (i, card) in cards.iter().enumerate() {
        let token = issuer.token(&card.pan);
        let account: Option<Vec<u8>> = conn
            .query_row(
                "SELECT account_id FROM cards WHERE token = ?1",
                params![token],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = account.and_then(|a| <[u8; 16]>::try_from(a.as_slice()).ok()) else {
            report.problem(format!("card {i} is not on file"));
            continue;
        };
        let balances = reader.balances(AccountId(u128::from_be_bytes(id)))?;
        let available = balances.map_or(0, |b| b.available_to_debit());
        let expected = i128::from(opening) - spent[i];
        if i128::from(available) != expected {
            report.problem(format!(
                "card {i}: balance {available}, expected {expected} ({opening} less {} spent)",
                spent[i]
            ));
        }
        report.cards += 1;
    }
    let invariants = reader.check_invariants()?;
    if !invariants.is_consistent() {
        report.problem(format!("ledger invariants: {invariants:?}"));
    }

    // Every journal row (of any terminal) has exactly one outbox event.
    let (rows, without_one, events): (i64, i64, i64) = conn.query_row(
        "SELECT (SELECT count(*) FROM journal),
                (SELECT count(*) FROM journal j
                   WHERE (SELECT count(*) FROM outbox o WHERE o.event_id = 'txn-' || j.id) <> 1),
                (SELECT count(*) FROM outbox WHERE kind = 'transaction')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if without_one != 0 || rows != events {
        report.problem(format!(
            "outbox: {rows} journal rows, {events} transaction events, {without_one} rows without exactly one"
        ));
    }
    Ok(report)
}
