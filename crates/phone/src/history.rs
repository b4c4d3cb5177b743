//! The phone's own record: its identity (`SaleID`), the cashier logged in,
//! and every exchange with a terminal — written before the request
//! leaves, completed when its outcome is known — in `phone.db` (SQLite,
//! owner-only). No card data beyond the masked PAN the terminal returns.
//!
//! `ServiceID`s come from this record's sequence, so they are unique for
//! the phone's `SaleID`: a new data directory gets a new `SaleID`.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// Name of the database in the data directory.
pub const DB_FILE: &str = "phone.db";

/// The record could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// SQLite failed.
    #[error("{path}: {cause}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// The cause.
        cause: rusqlite::Error,
    },
    /// Creating the directory or restricting the file failed.
    #[error(transparent)]
    Files(#[from] pki::seal::SealError),
    /// Creating the directory failed.
    #[error("{path}: {cause}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
}

/// What an exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A sale.
    Payment,
    /// A refund.
    Refund,
    /// A reversal.
    Reversal,
    /// A status request.
    Status,
    /// A diagnosis.
    Diagnosis,
    /// A login.
    Login,
    /// A logout.
    Logout,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Refund => "refund",
            Self::Reversal => "reversal",
            Self::Status => "status",
            Self::Diagnosis => "diagnosis",
            Self::Login => "login",
            Self::Logout => "logout",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::Payment,
            Self::Refund,
            Self::Reversal,
            Self::Status,
            Self::Diagnosis,
            Self::Login,
            Self::Logout,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// Where an exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Sent (or about to be), no outcome yet: a phone that stopped here
    /// does not know the outcome (`posnet phone status` asks).
    Sent,
    /// Answered directly.
    Answered,
    /// Answer lost or inconsistent, learnt with `TransactionStatus`.
    Recovered,
    /// The terminal never received it.
    NotReceived,
    /// Nothing reached the terminal (connection refused, certificate
    /// mismatch, key rejected).
    NotSent,
    /// The outcome could not be learnt.
    Unknown,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Answered => "answered",
            Self::Recovered => "recovered",
            Self::NotReceived => "not-received",
            Self::NotSent => "not-sent",
            Self::Unknown => "unknown",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::Sent,
            Self::Answered,
            Self::Recovered,
            Self::NotReceived,
            Self::NotSent,
            Self::Unknown,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// An exchange about to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExchange<'a> {
    /// The terminal.
    pub poi_id: &'a str,
    /// What it is.
    pub kind: Kind,
    /// The amount in minor units, for payments and refunds.
    pub amount_minor: Option<u64>,
    /// The amount's currency.
    pub currency: Option<&'a str>,
    /// The transaction or exchange it refers to (`POITransactionID` of a
    /// refund's or reversal's original, `ServiceID` of a status request).
    pub reference: Option<&'a str>,
    /// When (RFC 3339).
    pub at: &'a str,
}

/// How an exchange ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Finish {
    /// `Result`.
    pub result: Option<String>,
    /// The reason of a failure, or what went wrong.
    pub reason: Option<String>,
    /// `POITransactionID` and its time stamp.
    pub poi_transaction: Option<(String, String)>,
    /// `MaskedPan` (masked again here, whatever the terminal sent).
    pub masked_pan: Option<String>,
    /// `ApprovalCode`.
    pub approval_code: Option<String>,
    /// Authorized or reversed amount, minor units.
    pub amount_minor: Option<u64>,
}

/// One exchange as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// `ServiceID`.
    pub service_id: String,
    /// The terminal.
    pub poi_id: String,
    /// What it was.
    pub kind: Kind,
    /// When it started.
    pub started_at: String,
    /// Amount, minor units.
    pub amount_minor: Option<u64>,
    /// Currency.
    pub currency: Option<String>,
    /// What it referred to.
    pub reference: Option<String>,
    /// Where it stands.
    pub state: State,
    /// `Result`.
    pub result: Option<String>,
    /// Reason of a failure.
    pub reason: Option<String>,
    /// `POITransactionID`.
    pub poi_transaction_id: Option<String>,
    /// Its time stamp.
    pub poi_transaction_time: Option<String>,
    /// Masked card number.
    pub masked_pan: Option<String>,
    /// Approval code.
    pub approval_code: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
}

/// The phone's database.
pub struct History {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("path", &self.path).finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS exchanges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id TEXT UNIQUE,
    poi_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    started_at TEXT NOT NULL,
    amount_minor INTEGER,
    currency TEXT,
    reference TEXT,
    state TEXT NOT NULL,
    result TEXT,
    reason TEXT,
    poi_transaction_id TEXT,
    poi_transaction_time TEXT,
    masked_pan TEXT,
    approval_code TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS exchanges_poi_txn ON exchanges (poi_transaction_id);
";

const COLUMNS: &str = "service_id, poi_id, kind, started_at, amount_minor, currency, reference, \
     state, result, reason, poi_transaction_id, poi_transaction_time, masked_pan, approval_code, \
     finished_at";

impl History {
    /// Opens (creating) the database in `data_dir`; a new database gets a
    /// new random `SaleID`.
    pub fn open(data_dir: &Path) -> Result<Self, HistoryError> {
        std::fs::create_dir_all(data_dir).map_err(|cause| HistoryError::Dir {
            path: data_dir.to_path_buf(),
            cause,
        })?;
        let path = data_dir.join(DB_FILE);
        pki::seal::restrict_to_owner(&path)?;
        let sql = |cause| HistoryError::Sqlite {
            path: path.clone(),
            cause,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "wal")
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        let history = Self { conn, path };
        if history.meta("sale_id")?.is_none() {
            let mut random = [0u8; 4];
            getrandom::fill(&mut random).expect("operating system random source");
            let sale_id = format!("phone-{}", hex::encode(random));
            history.with(|c| {
                c.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('sale_id', ?1)",
                    [&sale_id],
                )
            })?;
        }
        Ok(history)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, HistoryError> {
        f(&self.conn).map_err(|cause| HistoryError::Sqlite {
            path: self.path.clone(),
            cause,
        })
    }

    fn meta(&self, key: &str) -> Result<Option<String>, HistoryError> {
        self.with(|c| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }

    /// The phone's `SaleID`.
    pub fn sale_id(&self) -> Result<String, HistoryError> {
        Ok(self
            .meta("sale_id")?
            .expect("open() stores a SaleID before anything else"))
    }

    /// The cashier logged in, if any.
    pub fn operator(&self) -> Result<Option<String>, HistoryError> {
        self.meta("operator")
    }

    /// Records the cashier logged in (`None`: logged out).
    pub fn set_operator(&self, operator: Option<&str>) -> Result<(), HistoryError> {
        self.with(|c| match operator {
            Some(op) => c
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('operator', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [op],
                )
                .map(drop),
            None => c
                .execute("DELETE FROM meta WHERE key = 'operator'", [])
                .map(drop),
        })
    }

    /// Records an exchange about to be sent and returns its new
    /// `ServiceID` (ten digits).
    pub fn begin(&mut self, new: &NewExchange<'_>) -> Result<String, HistoryError> {
        let path = self.path.clone();
        let sql = |cause| HistoryError::Sqlite { path, cause };
        let tx = self.conn.transaction().map_err(sql.clone())?;
        tx.execute(
            "INSERT INTO exchanges (poi_id, kind, started_at, amount_minor, currency, reference, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'sent')",
            params![
                new.poi_id,
                new.kind.as_str(),
                new.at,
                new.amount_minor.map(|a| a as i64),
                new.currency,
                new.reference
            ],
        )
        .map_err(sql.clone())?;
        let id = tx.last_insert_rowid();
        let service_id = format!("{id:010}");
        tx.execute(
            "UPDATE exchanges SET service_id = ?1 WHERE id = ?2",
            params![service_id, id],
        )
        .map_err(sql.clone())?;
        tx.commit().map_err(sql)?;
        Ok(service_id)
    }

    /// Records how exchange `service_id` ended, at `at`.
    pub fn finish(
        &self,
        service_id: &str,
        state: State,
        finish: &Finish,
        at: &str,
    ) -> Result<(), HistoryError> {
        let (txn_id, txn_time) = finish
            .poi_transaction
            .as_ref()
            .map(|(id, time)| (Some(id.as_str()), Some(time.as_str())))
            .unwrap_or((None, None));
        let masked = finish.masked_pan.as_deref().map(iso8583::text::mask_pan);
        self.with(|c| {
            c.execute(
                "UPDATE exchanges SET state = ?2, result = ?3, reason = ?4, poi_transaction_id = ?5,
                     poi_transaction_time = ?6, masked_pan = ?7, approval_code = ?8,
                     amount_minor = COALESCE(?9, amount_minor), finished_at = ?10
                 WHERE service_id = ?1",
                params![
                    service_id,
                    state.as_str(),
                    finish.result,
                    finish.reason,
                    txn_id,
                    txn_time,
                    masked,
                    finish.approval_code,
                    finish.amount_minor.map(|a| a as i64),
                    at
                ],
            )
            .map(drop)
        })
    }

    fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
        let text = |i: usize, value: String| {
            rusqlite::Error::FromSqlConversionFailure(
                i,
                rusqlite::types::Type::Text,
                format!("unknown value {value:?}").into(),
            )
        };
        let kind: String = row.get(2)?;
        let state: String = row.get(7)?;
        Ok(Record {
            service_id: row.get(0)?,
            poi_id: row.get(1)?,
            kind: Kind::parse(&kind).ok_or_else(|| text(2, kind))?,
            started_at: row.get(3)?,
            amount_minor: row.get::<_, Option<i64>>(4)?.map(|a| a as u64),
            currency: row.get(5)?,
            reference: row.get(6)?,
            state: State::parse(&state).ok_or_else(|| text(7, state))?,
            result: row.get(8)?,
            reason: row.get(9)?,
            poi_transaction_id: row.get(10)?,
            poi_transaction_time: row.get(11)?,
            masked_pan: row.get(12)?,
            approval_code: row.get(13)?,
            finished_at: row.get(14)?,
        })
    }

    /// The `limit` most recent exchanges, newest first.
    pub fn list(&self, limit: u32) -> Result<Vec<Record>, HistoryError> {
        self.with(|c| {
            c.prepare(&format!(
                "SELECT {COLUMNS} FROM exchanges ORDER BY id DESC LIMIT ?1"
            ))?
            .query_map([limit], Self::record)?
            .collect()
        })
    }

    /// The `limit` most recent payments, refunds and reversals, newest
    /// first.
    pub fn transactions(&self, limit: u32) -> Result<Vec<Record>, HistoryError> {
        self.with(|c| {
            c.prepare(&format!(
                "SELECT {COLUMNS} FROM exchanges
                 WHERE kind IN ('payment', 'refund', 'reversal')
                 ORDER BY id DESC LIMIT ?1"
            ))?
            .query_map([limit], Self::record)?
            .collect()
        })
    }

    /// The exchange with `service_id`.
    pub fn find(&self, service_id: &str) -> Result<Option<Record>, HistoryError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM exchanges WHERE service_id = ?1"),
                [service_id],
                Self::record,
            )
            .optional()
        })
    }

    /// The latest exchange that produced terminal transaction `poi_txn`.
    pub fn find_poi_transaction(&self, poi_txn: &str) -> Result<Option<Record>, HistoryError> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM exchanges WHERE poi_transaction_id = ?1
                     ORDER BY id DESC LIMIT 1"
                ),
                [poi_txn],
                Self::record,
            )
            .optional()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment<'a>(at: &'a str) -> NewExchange<'a> {
        NewExchange {
            poi_id: "T1",
            kind: Kind::Payment,
            amount_minor: Some(1250),
            currency: Some("EUR"),
            reference: None,
            at,
        }
    }

    #[test]
    fn service_ids_are_sequential_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path()).unwrap();
        let sale_id = h.sale_id().unwrap();
        assert!(
            sale_id.starts_with("phone-") && sale_id.len() == 14,
            "{sale_id}"
        );
        assert_eq!(h.begin(&payment("t1")).unwrap(), "0000000001");
        assert_eq!(h.begin(&payment("t2")).unwrap(), "0000000002");
        drop(h);
        let mut h = History::open(dir.path()).unwrap();
        assert_eq!(h.sale_id().unwrap(), sale_id);
        assert_eq!(h.begin(&payment("t3")).unwrap(), "0000000003");
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            History::open(other.path()).unwrap().sale_id().unwrap(),
            sale_id
        );
    }

    #[test]
    fn records_outcomes_with_the_pan_masked() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path()).unwrap();
        let sid = h.begin(&payment("2025-03-14T09:26:53Z")).unwrap();
        assert_eq!(h.find(&sid).unwrap().unwrap().state, State::Sent);
        h.finish(
            &sid,
            State::Recovered,
            &Finish {
                result: Some("Success".into()),
                reason: None,
                poi_transaction: Some(("000123".into(), "2025-03-14T09:26:58.000Z".into())),
                // A terminal that sent the whole number is masked here.
                masked_pan: Some("6270120000000018".into()),
                approval_code: Some("A1B2C3".into()),
                amount_minor: None,
            },
            "2025-03-14T09:27:10Z",
        )
        .unwrap();
        let r = h.find_poi_transaction("000123").unwrap().unwrap();
        assert_eq!(r.service_id, sid);
        assert_eq!(r.state, State::Recovered);
        assert_eq!(r.masked_pan.as_deref(), Some("627012******0018"));
        assert_eq!(r.amount_minor, Some(1250));
        assert_eq!(
            r.poi_transaction_time.as_deref(),
            Some("2025-03-14T09:26:58.000Z")
        );
        assert_eq!(h.list(10).unwrap(), vec![r.clone()]);
        let status = h
            .begin(&NewExchange {
                kind: Kind::Status,
                amount_minor: None,
                currency: None,
                reference: Some(&sid),
                ..payment("2025-03-14T09:27:00Z")
            })
            .unwrap();
        assert_eq!(h.list(10).unwrap()[0].service_id, status);
        assert_eq!(h.transactions(10).unwrap(), vec![r]);
        assert!(h.find("0000000099").unwrap().is_none());
    }

    #[test]
    fn operator_login_and_logout() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        assert_eq!(h.operator().unwrap(), None);
        h.set_operator(Some("cashier-7")).unwrap();
        h.set_operator(Some("cashier-8")).unwrap();
        assert_eq!(h.operator().unwrap().as_deref(), Some("cashier-8"));
        h.set_operator(None).unwrap();
        assert_eq!(h.operator().unwrap(), None);
    }

    #[cfg(unix)]
    #[test]
    fn the_database_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        History::open(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(DB_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
