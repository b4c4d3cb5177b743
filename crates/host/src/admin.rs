//! Administration of the host's data: merchants, cards and wallets of the
//! closed-loop issuer, and terminal enrollment. Each operation runs inside a
//! ledger transaction, so accounts, their opening loads and the host's rows
//! commit together.

use crate::flows::{JobError, WALLET_SECRET_PURPOSE, ensure_funding, merchant_account};
use crate::issuer::{IssuerKeys, account_id, funding_account, luhn_valid, seal_pan};
use iso8583::text::mask_pan;
use ledger::{
    AccountFlags, AccountKind, Currency, LedgerRead, LedgerTx, NewAccount, SqliteTx, TransferId,
    TransferRequest,
};
use paycrypto::dukpt::aes::initial_key;
use paycrypto::paycode::{self, WalletNumber};
use paycrypto::totp::Totp;
use paycrypto::tr31::{Header, Version, wrap};
use paycrypto::{Bdk, Kbpk, KeyAlgorithm};
use pki::{Deployment, EnrollmentBundle, MasterKey};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// An administrative request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Storage failed.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The request is invalid; nothing was written.
    #[error("{0}")]
    Invalid(String),
}

impl From<rusqlite::Error> for AdminError {
    fn from(e: rusqlite::Error) -> Self {
        AdminError::Job(e.into())
    }
}

impl From<ledger::StoreError> for AdminError {
    fn from(e: ledger::StoreError) -> Self {
        AdminError::Job(e.into())
    }
}

/// A merchant of the network.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MerchantSpec {
    /// ISO 8583 field 42 (15 characters).
    pub merchant_id: String,
    /// Name printed on receipts.
    pub name: String,
    /// ISO 4217 numeric currency.
    pub currency: u16,
    /// Largest amount per transaction, minor units.
    pub max_amount: u64,
    /// Discount rate in basis points (150 = 1.50 %), charged on each
    /// batch's net sales at settlement.
    #[serde(default)]
    pub fee_bps: u32,
    /// Where the host POSTs transaction events.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Secret of the webhook signature (HMAC-SHA256).
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Key for the merchant REST API.
    #[serde(default)]
    pub api_key: Option<String>,
}

/// A card or wallet of the closed-loop issuer.
#[derive(Clone, Deserialize, Serialize)]
pub struct CardSpec {
    /// Primary account number (Luhn-valid, 12 to 19 digits).
    pub pan: String,
    /// Expiry, YYMM.
    pub expiry: String,
    /// PIN, when the card needs one.
    #[serde(default)]
    pub pin: Option<String>,
    /// `card` or `wallet`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Opening balance, minor units.
    #[serde(default)]
    pub balance: u64,
    /// Largest amount per transaction.
    pub per_txn_limit: u64,
    /// Largest total per day.
    pub daily_limit: u64,
    /// ISO 4217 numeric currency.
    pub currency: u16,
    /// `active`, `blocked` or `lost`.
    #[serde(default = "default_status")]
    pub status: String,
    /// Holder or label (a test card's purpose).
    #[serde(default)]
    pub holder: String,
}

impl std::fmt::Debug for CardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardSpec")
            .field("pan", &mask_pan(&self.pan))
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

fn default_kind() -> String {
    "card".into()
}
fn default_status() -> String {
    "active".into()
}

/// A TOML file of merchants and cards (`posnet host accounts import`).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Seed {
    /// Merchants.
    #[serde(default)]
    pub merchant: Vec<MerchantSpec>,
    /// Cards and wallets.
    #[serde(default)]
    pub card: Vec<CardSpec>,
}

/// Whether an add created something or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Added {
    /// Created now.
    Created,
    /// Already present; left as it was.
    Exists,
}

/// SHA-256 of a merchant API key, as stored.
pub fn api_key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Adds a merchant and its ledger account.
pub fn add_merchant(
    tx: &mut SqliteTx<'_>,
    spec: &MerchantSpec,
    master: &MasterKey,
    now: i64,
) -> Result<Added, AdminError> {
    if spec.merchant_id.len() != 15 || spec.max_amount == 0 || spec.fee_bps > 10_000 {
        return Err(AdminError::Invalid(format!(
            "merchant {:?}: id must be 15 characters, max_amount above 0, fee_bps at most 10000",
            spec.merchant_id
        )));
    }
    let exists: Option<i64> = tx
        .sql()
        .query_row(
            "SELECT 1 FROM merchants WHERE merchant_id = ?1",
            params![spec.merchant_id],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Ok(Added::Exists);
    }
    let currency = Currency(spec.currency);
    ensure_funding(tx, currency)?;
    let account = merchant_account(&spec.merchant_id);
    create_account(
        tx,
        NewAccount::new(account, currency, AccountKind::Merchant),
    )?;
    tx.sql().execute(
        "INSERT INTO merchants (merchant_id, name, account_id, currency, max_amount, webhook_url, webhook_secret, api_key_hash, created_at, fee_bps)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            spec.merchant_id,
            spec.name,
            account.0.to_be_bytes().to_vec(),
            spec.currency,
            spec.max_amount as i64,
            spec.webhook_url,
            spec.webhook_secret.as_ref().map(|s| master.seal("webhook secret", s.as_bytes())),
            spec.api_key.as_deref().map(api_key_hash),
            now,
            spec.fee_bps,
        ],
    )?;
    Ok(Added::Created)
}

fn create_account(tx: &mut SqliteTx<'_>, new: NewAccount) -> Result<(), AdminError> {
    match tx.create_account(&new) {
        Ok(_) => Ok(()),
        Err(ledger::AccountError::Store(e)) => Err(e.into()),
        Err(e) => Err(AdminError::Invalid(e.to_string())),
    }
}

/// Adds a card or wallet with its stored-value account and opening load.
pub fn add_card(
    tx: &mut SqliteTx<'_>,
    spec: &CardSpec,
    issuer: &IssuerKeys,
    master: &MasterKey,
    now: i64,
) -> Result<Added, AdminError> {
    let invalid = |what: &str| {
        Err(AdminError::Invalid(format!(
            "card {}: {what}",
            mask_pan(&spec.pan)
        )))
    };
    if !luhn_valid(&spec.pan) {
        return invalid("PAN must be 12 to 19 digits with a valid Luhn check digit");
    }
    if spec.expiry.len() != 4 || !spec.expiry.bytes().all(|b| b.is_ascii_digit()) {
        return invalid("expiry must be YYMM");
    }
    if !matches!(spec.kind.as_str(), "card" | "wallet")
        || !matches!(spec.status.as_str(), "active" | "blocked" | "lost")
    {
        return invalid("kind must be card or wallet, status active, blocked or lost");
    }
    if spec
        .pin
        .as_ref()
        .is_some_and(|p| !(4..=12).contains(&p.len()) || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return invalid("PIN must be 4 to 12 digits");
    }
    if spec.per_txn_limit == 0 || spec.daily_limit == 0 {
        return invalid("limits must be above 0");
    }
    let token = issuer.token(&spec.pan);
    let exists: Option<i64> = tx
        .sql()
        .query_row(
            "SELECT 1 FROM cards WHERE token = ?1",
            params![token],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Ok(Added::Exists);
    }
    let currency = Currency(spec.currency);
    ensure_funding(tx, currency)?;
    let account = account_id("card", &token);
    let kind = if spec.kind == "wallet" {
        AccountKind::Wallet
    } else {
        AccountKind::Card
    };
    create_account(
        tx,
        NewAccount::new(account, currency, kind)
            .flags(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
    )?;
    if spec.balance > 0 {
        let load = TransferId(account_id("load", &token).0);
        let request = TransferRequest::single(
            load,
            funding_account(currency),
            account,
            spec.balance,
            currency,
        );
        tx.create_transfer(&request).map_err(|e| match e {
            ledger::TransferError::Store(e) => AdminError::from(e),
            other => AdminError::Invalid(other.to_string()),
        })?;
    }
    tx.sql().execute(
        "INSERT INTO cards (token, account_id, kind, masked_pan, pan_sealed, expiry, pin_check, status, per_txn_limit, daily_limit, currency, holder, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            token,
            account.0.to_be_bytes().to_vec(),
            spec.kind,
            mask_pan(&spec.pan),
            seal_pan(master, &spec.pan),
            spec.expiry,
            spec.pin.as_ref().map(|p| issuer.pin_check(&token, p).to_vec()),
            spec.status,
            spec.per_txn_limit as i64,
            spec.daily_limit as i64,
            spec.currency,
            spec.holder,
            now,
        ],
    )?;
    Ok(Added::Created)
}

/// Changes a card's status (`active`, `blocked`, `lost`).
pub fn set_card_status(
    tx: &mut SqliteTx<'_>,
    issuer: &IssuerKeys,
    pan: &str,
    status: &str,
) -> Result<bool, AdminError> {
    if !matches!(status, "active" | "blocked" | "lost") {
        return Err(AdminError::Invalid(format!(
            "status {status:?}: use active, blocked or lost"
        )));
    }
    Ok(tx.sql().execute(
        "UPDATE cards SET status = ?2 WHERE token = ?1",
        params![issuer.token(pan), status],
    )? == 1)
}

/// A wallet of the closed-loop issuer, paid by payment code.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WalletSpec {
    /// Wallet number, 9 digits.
    pub number: String,
    /// Opening balance, minor units.
    #[serde(default)]
    pub balance: u64,
    /// Largest amount per transaction.
    pub per_txn_limit: u64,
    /// Largest total per day.
    pub daily_limit: u64,
    /// ISO 4217 numeric currency.
    pub currency: u16,
    /// Holder or label.
    #[serde(default)]
    pub holder: String,
}

/// A wallet's TOTP secret, given to its holder once when the wallet is
/// created (the host keeps it sealed); zeroized on drop, never in `Debug`.
pub struct WalletSecret(zeroize::Zeroizing<Vec<u8>>);

impl WalletSecret {
    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for WalletSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WalletSecret(redacted)")
    }
}

/// The ledger account of wallet `number`.
pub fn wallet_account(number: WalletNumber) -> ledger::AccountId {
    account_id("wallet", &number.to_string())
}

/// Adds a wallet with its stored-value account, opening load and a fresh
/// TOTP secret, sealed under the master key. Returns the secret for its
/// holder; `None` when the wallet already exists (a secret leaves once).
pub fn add_wallet(
    tx: &mut SqliteTx<'_>,
    spec: &WalletSpec,
    master: &MasterKey,
    now: i64,
) -> Result<Option<WalletSecret>, AdminError> {
    let number = WalletNumber::parse(&spec.number)
        .map_err(|e| AdminError::Invalid(format!("wallet {:?}: {e}", spec.number)))?;
    if spec.per_txn_limit == 0 || spec.daily_limit == 0 {
        return Err(AdminError::Invalid(format!(
            "wallet {number}: limits must be above 0"
        )));
    }
    let exists: Option<i64> = tx
        .sql()
        .query_row(
            "SELECT 1 FROM wallets WHERE number = ?1",
            params![number.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Ok(None);
    }
    let currency = Currency(spec.currency);
    ensure_funding(tx, currency)?;
    let account = wallet_account(number);
    create_account(
        tx,
        NewAccount::new(account, currency, AccountKind::Wallet)
            .flags(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
    )?;
    let totp = Totp::generate(paycode::ISSUER, &number.to_string())
        .map_err(|e| AdminError::Invalid(e.to_string()))?;
    tx.sql().execute(
        "INSERT INTO wallets (number, account_id, secret_sealed, status, per_txn_limit, daily_limit, currency, holder, created_at)
         VALUES (?1, ?2, ?3, 'active', ?4, ?5, ?6, ?7, ?8)",
        params![
            number.to_string(),
            account.0.to_be_bytes().to_vec(),
            master.seal(WALLET_SECRET_PURPOSE, totp.secret()),
            spec.per_txn_limit as i64,
            spec.daily_limit as i64,
            spec.currency,
            spec.holder,
            now,
        ],
    )?;
    if spec.balance > 0 {
        fund_wallet(tx, number, spec.balance)?;
    }
    Ok(Some(WalletSecret(zeroize::Zeroizing::new(
        totp.secret().to_vec(),
    ))))
}

/// Loads `amount` onto wallet `number` from the funding account. Each load
/// is a new transfer: a repeated command loads again.
pub fn fund_wallet(
    tx: &mut SqliteTx<'_>,
    number: WalletNumber,
    amount: u64,
) -> Result<(), AdminError> {
    let currency: Option<u16> = tx
        .sql()
        .query_row(
            "SELECT currency FROM wallets WHERE number = ?1",
            params![number.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    let Some(currency) = currency else {
        return Err(AdminError::Invalid(format!("no wallet {number}")));
    };
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).expect("operating system random source");
    let currency = Currency(currency);
    let request = TransferRequest::single(
        TransferId(u128::from_be_bytes(id)),
        funding_account(currency),
        wallet_account(number),
        amount,
        currency,
    );
    tx.create_transfer(&request).map_err(|e| match e {
        ledger::TransferError::Store(e) => AdminError::from(e),
        other => AdminError::Invalid(format!("wallet {number}: {other}")),
    })?;
    Ok(())
}

/// One row of `posnet host wallet list`.
#[derive(Debug, Clone, Serialize)]
pub struct WalletInfo {
    /// Wallet number.
    pub number: String,
    /// `active`, `blocked` or `lost`.
    pub status: String,
    /// Available balance, minor units.
    pub balance: u64,
    /// ISO 4217 numeric currency.
    pub currency: u16,
    /// Holder or label.
    pub holder: String,
    /// Step (Unix time / 30) of the last code accepted, if any.
    pub last_step: Option<i64>,
}

/// All wallets with their balances, by number.
pub fn list_wallets(tx: &mut SqliteTx<'_>) -> Result<Vec<WalletInfo>, AdminError> {
    let rows: Vec<(WalletInfo, Vec<u8>)> = {
        let mut stmt = tx.sql().prepare(
            "SELECT number, status, currency, holder, last_step, account_id FROM wallets ORDER BY number",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                WalletInfo {
                    number: r.get(0)?,
                    status: r.get(1)?,
                    balance: 0,
                    currency: r.get(2)?,
                    holder: r.get(3)?,
                    last_step: r.get(4)?,
                },
                r.get(5)?,
            ))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut wallets = Vec::with_capacity(rows.len());
    for (mut info, account) in rows {
        let account = <[u8; 16]>::try_from(account.as_slice())
            .map(|b| ledger::AccountId(u128::from_be_bytes(b)))
            .map_err(|_| AdminError::Invalid(format!("wallet {}: bad account id", info.number)))?;
        info.balance = tx
            .balances(account)?
            .map(|b| b.available_to_debit())
            .unwrap_or(0);
        wallets.push(info);
    }
    Ok(wallets)
}

/// Limits and options of a new terminal.
#[derive(Debug, Clone)]
pub struct TerminalSpec {
    /// ISO 8583 field 41 (8 characters).
    pub terminal_id: String,
    /// The merchant it belongs to (must exist).
    pub merchant_id: String,
    /// Largest amount per transaction.
    pub max_amount: u64,
    /// Offline floor limit (0: no offline approvals).
    pub offline_floor: u64,
    /// Host addresses written into the bundle.
    pub hosts: Vec<String>,
}

/// What enrollment prepares outside the transaction: a certificate and a
/// fresh initial key, wrapped for transport.
pub struct PreparedEnrollment {
    bundle: EnrollmentBundle,
    serial: String,
    fingerprint: String,
    spec: TerminalSpec,
}

impl std::fmt::Debug for PreparedEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedEnrollment")
            .field("terminal_id", &self.spec.terminal_id)
            .finish_non_exhaustive()
    }
}

/// Issues the terminal's certificate and initial key (CPU and key work,
/// done before the transaction that registers them).
pub fn prepare_enrollment(
    deployment: &Deployment,
    spec: TerminalSpec,
) -> Result<PreparedEnrollment, AdminError> {
    let invalid = |e: &dyn std::fmt::Display| AdminError::Invalid(e.to_string());
    let cert = deployment
        .issue_terminal_certificate(&spec.terminal_id, &spec.merchant_id)
        .map_err(|e| invalid(&e))?;
    let mut ikid = [0u8; 8];
    getrandom::fill(&mut ikid).expect("operating system random source");
    let bdk = Bdk::new(KeyAlgorithm::Aes128, deployment.bdk().expose()).map_err(|e| invalid(&e))?;
    let ik = initial_key(&bdk, ikid).map_err(|e| invalid(&e))?;
    let kbpk =
        Kbpk::new(KeyAlgorithm::Aes256, deployment.ktk().expose()).map_err(|e| invalid(&e))?;
    let header = Header::new(Version::D, "B1", 'A', 'X', "00", 'N');
    let block = wrap(&kbpk, &header, ik.expose_secret()).map_err(|e| invalid(&e))?;
    let bundle = EnrollmentBundle {
        terminal_id: spec.terminal_id.clone(),
        merchant_id: spec.merchant_id.clone(),
        hosts: spec.hosts.clone(),
        ca_cert_pem: deployment.ca_cert_pem().to_string(),
        cert_pem: cert.cert_pem,
        key_pem: String::from_utf8(cert.key_pem.expose().to_vec()).expect("PEM is ASCII"),
        initial_key_block: block,
        initial_key_id: hex::encode(ikid),
    };
    Ok(PreparedEnrollment {
        bundle,
        serial: cert.serial,
        fingerprint: cert.fingerprint,
        spec,
    })
}

/// Registers a prepared terminal (replacing the certificate and key of a
/// re-enrolled one) and returns its bundle.
pub fn enroll(
    tx: &mut SqliteTx<'_>,
    prepared: PreparedEnrollment,
    now: i64,
) -> Result<EnrollmentBundle, AdminError> {
    let spec = &prepared.spec;
    let merchant: Option<i64> = tx
        .sql()
        .query_row(
            "SELECT 1 FROM merchants WHERE merchant_id = ?1",
            params![spec.merchant_id],
            |r| r.get(0),
        )
        .optional()?;
    if merchant.is_none() {
        return Err(AdminError::Invalid(format!(
            "merchant {} does not exist: add it first",
            spec.merchant_id
        )));
    }
    if spec.max_amount == 0 {
        return Err(AdminError::Invalid("max_amount must be above 0".into()));
    }
    tx.sql().execute(
        "INSERT INTO terminals (terminal_id, merchant_id, status, cert_serial, cert_fingerprint, initial_key_id, max_amount, offline_floor, enrolled_at)
         VALUES (?1, ?2, 'active', ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (terminal_id) DO UPDATE SET merchant_id = ?2, status = 'active', cert_serial = ?3, cert_fingerprint = ?4,
           initial_key_id = ?5, last_ksn_counter = 0, max_amount = ?6, offline_floor = ?7, param_version = param_version + 1, enrolled_at = ?8",
        params![
            spec.terminal_id,
            spec.merchant_id,
            prepared.serial,
            prepared.fingerprint,
            prepared.bundle.initial_key_id,
            spec.max_amount as i64,
            spec.offline_floor as i64,
            now,
        ],
    )?;
    Ok(prepared.bundle.clone())
}

/// Sets a terminal's status: `active`, `disabled` (refused until enabled) or
/// `revoked` (refused for good; re-enrollment issues a new certificate).
pub fn set_terminal_status(
    tx: &mut SqliteTx<'_>,
    terminal_id: &str,
    status: &str,
) -> Result<bool, AdminError> {
    if !matches!(status, "active" | "disabled" | "revoked") {
        return Err(AdminError::Invalid(format!(
            "status {status:?}: use active, disabled or revoked"
        )));
    }
    let current: Option<String> = tx
        .sql()
        .query_row(
            "SELECT status FROM terminals WHERE terminal_id = ?1",
            params![terminal_id],
            |r| r.get(0),
        )
        .optional()?;
    if current.as_deref() == Some("revoked") && status != "revoked" {
        return Err(AdminError::Invalid(format!(
            "terminal {terminal_id} is revoked: enroll it again for a new certificate"
        )));
    }
    Ok(tx.sql().execute(
        "UPDATE terminals SET status = ?2 WHERE terminal_id = ?1",
        params![terminal_id, status],
    )? == 1)
}

/// One row of `posnet host terminals list`.
#[derive(Debug, Clone, Serialize)]
pub struct TerminalInfo {
    /// Field 41.
    pub terminal_id: String,
    /// Field 42.
    pub merchant_id: String,
    /// `active`, `disabled` or `revoked`.
    pub status: String,
    /// Certificate fingerprint (SHA-256, hex).
    pub cert_fingerprint: String,
    /// Last KSN counter seen.
    pub last_ksn_counter: u32,
    /// Whether the terminal is signed on.
    pub signed_on: bool,
}

/// All terminals, by id.
pub fn list_terminals(conn: &rusqlite::Connection) -> Result<Vec<TerminalInfo>, rusqlite::Error> {
    let mut stmt = conn.prepare(
        "SELECT terminal_id, merchant_id, status, cert_fingerprint, last_ksn_counter, signed_on_at IS NOT NULL FROM terminals ORDER BY terminal_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(TerminalInfo {
            terminal_id: r.get(0)?,
            merchant_id: r.get(1)?,
            status: r.get(2)?,
            cert_fingerprint: r.get(3)?,
            last_ksn_counter: r.get(4)?,
            signed_on: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// Whether a terminal presenting a certificate with `fingerprint` may connect.
pub fn admits(conn: &rusqlite::Connection, terminal_id: &str, fingerprint: &str) -> bool {
    conn.query_row(
        "SELECT 1 FROM terminals WHERE terminal_id = ?1 AND status = 'active' AND cert_fingerprint = ?2",
        params![terminal_id, fingerprint],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
    .unwrap_or(false)
}
