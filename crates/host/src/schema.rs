//! The host's tables, migrated with the ledger's and written in the same
//! commits as the transfers they describe.

use ledger::Migrations;

/// The host's migration steps. Released steps are never edited; a change is a new step.
pub const HOST: Migrations = Migrations {
    component: "host",
    steps: &[
        r#"
CREATE TABLE merchants (
    merchant_id    TEXT PRIMARY KEY CHECK (length(merchant_id) = 15),
    name           TEXT NOT NULL,
    account_id     BLOB NOT NULL UNIQUE CHECK (length(account_id) = 16),
    currency       INTEGER NOT NULL,
    max_amount     INTEGER NOT NULL CHECK (max_amount > 0),
    webhook_url    TEXT,
    webhook_secret BLOB,
    api_key_hash   TEXT,
    created_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE terminals (
    terminal_id      TEXT PRIMARY KEY CHECK (length(terminal_id) = 8),
    merchant_id      TEXT NOT NULL REFERENCES merchants (merchant_id),
    status           TEXT NOT NULL CHECK (status IN ('active', 'disabled', 'revoked')),
    cert_serial      TEXT NOT NULL,
    cert_fingerprint TEXT NOT NULL,
    initial_key_id   TEXT NOT NULL CHECK (length(initial_key_id) = 16),
    last_ksn_counter INTEGER NOT NULL DEFAULT 0,
    max_amount       INTEGER NOT NULL CHECK (max_amount > 0),
    offline_floor    INTEGER NOT NULL CHECK (offline_floor >= 0),
    param_version    INTEGER NOT NULL DEFAULT 1,
    signed_on_at     INTEGER,
    enrolled_at      INTEGER NOT NULL
) STRICT;

-- Cards and wallets of the closed-loop issuer. The PAN is kept only as a
-- keyed token (lookups) and sealed (recovery by the issuer), never in clear.
CREATE TABLE cards (
    token         TEXT PRIMARY KEY,
    account_id    BLOB NOT NULL UNIQUE CHECK (length(account_id) = 16),
    kind          TEXT NOT NULL CHECK (kind IN ('card', 'wallet')),
    masked_pan    TEXT NOT NULL,
    pan_sealed    BLOB NOT NULL,
    expiry        TEXT NOT NULL CHECK (length(expiry) = 4),
    pin_check     BLOB,
    status        TEXT NOT NULL CHECK (status IN ('active', 'blocked', 'lost')),
    per_txn_limit INTEGER NOT NULL CHECK (per_txn_limit > 0),
    daily_limit   INTEGER NOT NULL CHECK (daily_limit > 0),
    currency      INTEGER NOT NULL,
    holder        TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL
) STRICT;

-- Every request a terminal sent and the exact response it got: the
-- exactly-once record (a repeat returns `response`), the settlement source,
-- and what the merchant API serves.
CREATE TABLE journal (
    id            INTEGER PRIMARY KEY,
    terminal_id   TEXT NOT NULL,
    merchant_id   TEXT NOT NULL,
    mti           TEXT NOT NULL,
    stan          INTEGER NOT NULL,
    batch         INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    amount        INTEGER NOT NULL,
    currency      INTEGER NOT NULL,
    card_token    TEXT,
    masked_pan    TEXT,
    response_code TEXT NOT NULL,
    auth_code     TEXT,
    rrn           TEXT NOT NULL,
    transfer_id   BLOB,
    original_id   INTEGER REFERENCES journal (id),
    state         TEXT NOT NULL,
    request_hash  BLOB NOT NULL,
    response      BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (terminal_id, mti, stan, batch)
) STRICT;
CREATE INDEX journal_card_time ON journal (card_token, created_at);
CREATE INDEX journal_batch ON journal (terminal_id, batch);
CREATE INDEX journal_merchant_time ON journal (merchant_id, created_at);

-- Merchant notifications, written in the same commit as the transfer.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    merchant_id     TEXT NOT NULL,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    last_error      TEXT
) STRICT;
CREATE INDEX outbox_pending ON outbox (merchant_id, id) WHERE delivered_at IS NULL;

CREATE TABLE settlements (
    id            INTEGER PRIMARY KEY,
    terminal_id   TEXT NOT NULL,
    batch         INTEGER NOT NULL,
    debit_amount  INTEGER NOT NULL,
    debit_count   INTEGER NOT NULL,
    credit_amount INTEGER NOT NULL,
    credit_count  INTEGER NOT NULL,
    balanced      INTEGER NOT NULL CHECK (balanced IN (0, 1)),
    uploaded      INTEGER NOT NULL DEFAULT 0,
    closed_at     INTEGER,
    created_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX settlements_terminal_batch ON settlements (terminal_id, batch);
"#,
        // A sale served by an upstream host: "<bin prefix>:<batch>:<stan>" of
        // the upstream transaction, to void it when the terminal reverses.
        "ALTER TABLE journal ADD COLUMN upstream TEXT;",
        // The merchant API pages a merchant's events by outbox id.
        "CREATE INDEX outbox_merchant ON outbox (merchant_id, id);",
        // The merchant's discount rate in basis points, charged at settlement.
        "ALTER TABLE merchants ADD COLUMN fee_bps INTEGER NOT NULL DEFAULT 0 CHECK (fee_bps BETWEEN 0 AND 10000);",
        // A card's spending today (the daily limit, read on every sale) from
        // the index alone: with the table rows behind journal_card_time, each
        // of the card's earlier rows cost a page read, half the committer's
        // time under load. This index serves every lookup that one did.
        "CREATE INDEX journal_card_spend ON journal (card_token, created_at, kind, state, amount);
         DROP INDEX journal_card_time;",
        // Wallets of the closed-loop issuer, paid by payment code
        // (paycrypto::paycode): the TOTP secret sealed under the master key,
        // and the step of the last accepted code, so each code pays once.
        // The journal names each transaction's payment method.
        r#"
CREATE TABLE wallets (
    number        TEXT PRIMARY KEY CHECK (length(number) = 9),
    account_id    BLOB NOT NULL UNIQUE CHECK (length(account_id) = 16),
    secret_sealed BLOB NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'blocked', 'lost')),
    last_step     INTEGER,
    per_txn_limit INTEGER NOT NULL CHECK (per_txn_limit > 0),
    daily_limit   INTEGER NOT NULL CHECK (daily_limit > 0),
    currency      INTEGER NOT NULL,
    holder        TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL
) STRICT;
ALTER TABLE journal ADD COLUMN method TEXT NOT NULL DEFAULT 'card' CHECK (method IN ('card', 'wallet'));
"#,
    ],
};
