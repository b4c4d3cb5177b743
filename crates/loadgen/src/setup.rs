//! A fleet for a load run: one merchant, funded cards and enrolled
//! terminals, added to a host's database in one group-commit job (each
//! terminal with its own certificate and DUKPT initial key). Safe to repeat:
//! the merchant and cards are kept as they are, the terminals re-enrolled
//! with fresh certificates and keys.

use crate::driver::TerminalLoad;
use crate::message::{Card, MessageError, SimTerminal, tls_config};
use host::admin::{self, AdminError, CardSpec, MerchantSpec, TerminalSpec};
use host::issuer::luhn_valid;
use host::runtime::HostData;
use pki::EnrollmentBundle;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Setting up the fleet failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The host refused an addition.
    #[error("enrolling the fleet: {0}")]
    Admin(String),
    /// A terminal could not be loaded from its bundle.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The fleet's size is out of range.
    #[error("{0}")]
    Size(String),
}

/// What to add.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Field 42 of the merchant (15 characters).
    pub merchant_id: String,
    /// Terminals, named `<prefix>000001` onwards (8 characters).
    pub terminals: usize,
    /// Two-character prefix of the terminal ids.
    pub terminal_prefix: String,
    /// Cards, shared by every terminal.
    pub cards: usize,
    /// First six digits of the cards' PANs; each PAN is 16 digits.
    pub bin: String,
    /// Opening balance of each card, minor units.
    pub balance: u64,
    /// Largest amount per transaction (merchant, terminal and card limit).
    pub max_amount: u64,
    /// Each card's daily limit.
    pub daily_limit: u64,
    /// Whether the cards need a PIN (sent in field 52).
    pub with_pin: bool,
    /// Each terminal's offline floor limit, minor units (0: never offline).
    pub offline_floor: u64,
    /// ISO 4217 numeric currency.
    pub currency: u16,
    /// Host address written into the bundles.
    pub host: String,
}

impl FleetSpec {
    /// `terminals` terminals and as many cards (at least one) with PINs,
    /// 1,000,000.00 each, for merchant `LOADGEN00000001` in CNY.
    pub fn new(terminals: usize, host: String) -> Self {
        FleetSpec {
            merchant_id: "LOADGEN00000001".into(),
            terminals,
            terminal_prefix: "LG".into(),
            cards: terminals.max(1),
            bin: "999000".into(),
            balance: 100_000_000,
            max_amount: 1_000_000,
            daily_limit: 1_000_000_000_000,
            with_pin: true,
            offline_floor: 0,
            currency: 156,
            host,
        }
    }

    fn check(&self) -> Result<(), SetupError> {
        let bad = |what: String| Err(SetupError::Size(what));
        if self.terminals == 0 || self.terminals > 999_999 {
            return bad(format!("{} terminals: use 1 to 999999", self.terminals));
        }
        if self.cards == 0 || self.cards > 999_999_999 {
            return bad(format!("{} cards: use 1 to 999999999", self.cards));
        }
        if self.terminal_prefix.len() != 2 {
            return bad("the terminal prefix is two characters".into());
        }
        if self.bin.len() != 6 || !self.bin.bytes().all(|b| b.is_ascii_digit()) {
            return bad("the BIN is six digits".into());
        }
        Ok(())
    }

    /// PAN of card `i`: the BIN, `i` in nine digits, a Luhn check digit.
    pub fn pan(&self, i: usize) -> String {
        let body = format!("{}{:09}", self.bin, i);
        (0..10)
            .map(|d| format!("{body}{d}"))
            .find(|pan| luhn_valid(pan))
            .expect("one check digit of ten makes a Luhn-valid number")
    }

    /// PIN of card `i` (when the cards have PINs).
    fn pin(&self, i: usize) -> Option<Zeroizing<String>> {
        self.with_pin
            .then(|| Zeroizing::new(format!("{:04}", 1000 + i % 9000)))
    }

    /// The cards as terminals present them.
    pub fn cards(&self) -> Vec<Card> {
        (0..self.cards)
            .map(|i| Card {
                pan: self.pan(i),
                expiry: Some("3012".into()),
                pin: self.pin(i),
            })
            .collect()
    }
}

/// An enrolled fleet: the terminals' bundles and the cards they present.
pub struct Fleet {
    /// One bundle per terminal.
    pub bundles: Vec<EnrollmentBundle>,
    /// The cards.
    pub cards: Arc<[Card]>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("terminals", &self.bundles.len())
            .field("cards", &self.cards.len())
            .finish()
    }
}

impl Fleet {
    /// Loads every terminal (unwrapping its initial key under `ktk`) for a run.
    pub fn terminals(&self, ktk: &[u8]) -> Result<Vec<TerminalLoad>, SetupError> {
        self.bundles
            .iter()
            .map(|b| {
                Ok(TerminalLoad {
                    terminal: SimTerminal::from_bundle(b, ktk)?,
                    tls: tls_config(b)?,
                    cards: self.cards.clone(),
                })
            })
            .collect()
    }
}

/// Adds the merchant, the cards and the terminals of `spec` to the host
/// over `data`, in one group-commit job, and returns the fleet.
pub async fn enroll_fleet(data: &HostData, spec: &FleetSpec) -> Result<Fleet, SetupError> {
    spec.check()?;
    let merchant = MerchantSpec {
        fee_bps: 0,
        merchant_id: spec.merchant_id.clone(),
        name: "Load generator".into(),
        currency: spec.currency,
        max_amount: spec.max_amount,
        webhook_url: None,
        webhook_secret: None,
        api_key: None,
    };
    let cards: Vec<CardSpec> = (0..spec.cards)
        .map(|i| CardSpec {
            pan: spec.pan(i),
            expiry: "3012".into(),
            pin: spec.pin(i).map(|p| p.to_string()),
            kind: "card".into(),
            balance: spec.balance,
            per_txn_limit: spec.max_amount,
            daily_limit: spec.daily_limit,
            currency: spec.currency,
            status: "active".into(),
            holder: format!("load card {i}"),
        })
        .collect();
    // Certificates and initial keys are CPU work: prepared before the job.
    let prepared = (1..=spec.terminals)
        .map(|i| {
            admin::prepare_enrollment(
                &data.deployment,
                TerminalSpec {
                    terminal_id: format!("{}{:06}", spec.terminal_prefix, i),
                    merchant_id: spec.merchant_id.clone(),
                    max_amount: spec.max_amount,
                    offline_floor: spec.offline_floor,
                    hosts: vec![spec.host.clone()],
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SetupError::Admin(e.to_string()))?;
    let issuer = data.issuer.clone();
    let master = data.master.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let bundles = data
        .ledger
        .submit(move |tx| -> Result<Vec<EnrollmentBundle>, AdminError> {
            admin::add_merchant(tx, &merchant, &master, now)?;
            for card in &cards {
                admin::add_card(tx, card, &issuer, &master, now)?;
            }
            prepared
                .into_iter()
                .map(|p| admin::enroll(tx, p, now))
                .collect()
        })
        .await
        .map_err(|e| SetupError::Admin(e.to_string()))?;
    Ok(Fleet {
        bundles,
        cards: spec.cards().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pans_are_luhn_valid_and_distinct() {
        let spec = FleetSpec::new(3, "127.0.0.1:5800".into());
        let pans: std::collections::BTreeSet<String> = (0..1_000).map(|i| spec.pan(i)).collect();
        assert_eq!(pans.len(), 1_000);
        // The published test PAN 4111 1111 1111 1111 has check digit 1.
        let visa = FleetSpec {
            bin: "411111".into(),
            ..spec.clone()
        };
        assert_eq!(visa.pan(111_111_111), "4111111111111111");
        assert!(pans.iter().all(|p| p.len() == 16 && luhn_valid(p)));
    }
}
