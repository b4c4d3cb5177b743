//! Card input: the reader trait (a PC/SC reader for NFC and contact cards
//! implements it later), a simulated reader with a documented catalog of
//! test cards, manual key entry, and a simulated PIN pad.

use crate::engine::{CardData, Entry};
use paycrypto::PinKey;
use paycrypto::paycode::PaymentCode;
use paycrypto::pinblock::{Format, Pan, Pin, PinBlockError, encipher, encode};

/// Reading a card failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// Nothing readable: bad swipe, chip error, card removed.
    #[error("card unreadable: {0}")]
    Unreadable(String),
    /// The cashier or customer cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// A card as the reader delivers it, with the PIN the customer entered.
pub struct PresentedCard {
    /// Card data.
    pub card: CardData,
    /// The entered PIN, if any; zeroized on drop, never shown.
    pub pin: Option<Pin>,
}

impl std::fmt::Debug for PresentedCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedCard")
            .field("card", &self.card)
            .field("pin", &self.pin.as_ref().map(|_| "****"))
            .finish()
    }
}

/// A source of cards (simulated, keyed, or a PC/SC reader).
pub trait CardReader: Send {
    /// Waits for a card for a transaction of `amount`.
    fn read(&mut self, amount: u64) -> Result<PresentedCard, CardError>;
}

/// A card of the test catalog, and how the host is seeded for it.
#[derive(Debug, Clone, Copy)]
pub struct TestCard {
    /// Name used by the simulator, the demo and the phone.
    pub name: &'static str,
    /// What it demonstrates.
    pub description: &'static str,
    /// Card number (Luhn-valid).
    pub pan: &'static str,
    /// Expiry YYMM.
    pub expiry: &'static str,
    /// The card's PIN at the issuer, if it needs one.
    pub pin: Option<&'static str>,
    /// The PIN the simulated customer types.
    pub entered_pin: Option<&'static str>,
    /// How it is read.
    pub entry: Entry,
    /// Whether the chip allows offline approval.
    pub offline_allowed: bool,
    /// Opening balance at the issuer, minor units.
    pub balance: u64,
    /// Per-transaction limit at the issuer.
    pub per_txn_limit: u64,
    /// Issuer status: `active`, `blocked` or `lost`.
    pub status: &'static str,
    /// Whether the reader fails on it.
    pub unreadable: bool,
}

const fn test_card(name: &'static str, description: &'static str, pan: &'static str) -> TestCard {
    TestCard {
        name,
        description,
        pan,
        expiry: "3012",
        pin: None,
        entered_pin: None,
        entry: Entry::Contactless,
        offline_allowed: false,
        balance: 100_000,
        per_txn_limit: 50_000,
        status: "active",
        unreadable: false,
    }
}

/// The test-card catalog (docs/test-cards.md lists it with expected results).
pub const CATALOG: &[TestCard] = &[
    TestCard {
        pin: Some("1234"),
        entered_pin: Some("1234"),
        entry: Entry::Chip,
        ..test_card(
            "approved",
            "chip card with PIN 1234 and 1,000.00: approved",
            "6200000000000005",
        )
    },
    TestCard {
        balance: 500,
        ..test_card(
            "insufficient_funds",
            "contactless card holding 5.00: declined 51",
            "6200000000000013",
        )
    },
    TestCard {
        expiry: "2001",
        ..test_card(
            "expired",
            "expired January 2020: refused by the terminal, 54 if keyed past it",
            "6200000000000021",
        )
    },
    TestCard {
        pin: Some("1234"),
        entered_pin: Some("9999"),
        entry: Entry::Chip,
        ..test_card(
            "wrong_pin",
            "the approved card with PIN 9999 entered: declined 55",
            "6200000000000005",
        )
    },
    TestCard {
        status: "lost",
        ..test_card(
            "lost",
            "card reported lost: declined 05",
            "6200000000000039",
        )
    },
    TestCard {
        per_txn_limit: 1_000,
        ..test_card(
            "over_limit",
            "card limited to 10.00 per transaction: declined 61",
            "6200000000000047",
        )
    },
    TestCard {
        entry: Entry::Chip,
        offline_allowed: true,
        balance: 50_000,
        ..test_card(
            "offline_chip",
            "chip card that allows offline approval under the floor limit",
            "6200000000000054",
        )
    },
    TestCard {
        unreadable: true,
        ..test_card(
            "unreadable",
            "a bad read: refused before anything is sent",
            "6200000000000062",
        )
    },
];

/// The catalog card called `name`.
pub fn test_card_named(name: &str) -> Option<&'static TestCard> {
    CATALOG.iter().find(|c| c.name == name)
}

impl TestCard {
    /// What the simulated reader delivers for this card.
    pub fn present(&self) -> Result<PresentedCard, CardError> {
        if self.unreadable {
            return Err(CardError::Unreadable("chip read failed, try again".into()));
        }
        Ok(PresentedCard {
            card: CardData {
                pan: self.pan.into(),
                expiry: self.expiry.into(),
                entry: self.entry,
                offline_allowed: self.offline_allowed,
            },
            pin: self
                .entered_pin
                .map(|p| Pin::new(p).expect("catalog PINs are valid")),
        })
    }
}

/// A wallet's payment code as the scanner reads it from the wallet app's
/// QR code or barcode (docs/test-cards.md): no expiry, track or PIN.
pub fn scanned_code(text: &str) -> Result<PresentedCard, CardError> {
    let code = PaymentCode::parse(text.trim())
        .map_err(|e| CardError::Unreadable(format!("not a payment code: {e}")))?;
    Ok(PresentedCard {
        card: CardData {
            pan: code.to_string(),
            expiry: String::new(),
            entry: Entry::Qr,
            offline_allowed: false,
        },
        pin: None,
    })
}

/// What the customer holds to the reader: a card of the test catalog or
/// a wallet app showing a payment code.
#[derive(Clone)]
pub enum Presentation {
    /// A catalog card.
    Card(&'static TestCard),
    /// A payment code, as scanned.
    Code(String),
}

impl std::fmt::Debug for Presentation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presentation::Card(card) => write!(f, "Card({})", card.name),
            Presentation::Code(code) => {
                write!(f, "Code({})", iso8583::text::mask_pan(code))
            }
        }
    }
}

impl Presentation {
    /// What the simulated reader delivers for it.
    pub fn present(&self) -> Result<PresentedCard, CardError> {
        match self {
            Presentation::Card(card) => card.present(),
            Presentation::Code(code) => scanned_code(code),
        }
    }
}

/// A simulated reader: presents the catalog card chosen or the payment
/// code scanned last (by tests, the demo, the phone or the terminal's
/// screen page).
#[derive(Debug, Default)]
pub struct SimulatedReader {
    next: Option<Presentation>,
}

impl SimulatedReader {
    /// Chooses the card the next read presents.
    pub fn choose(&mut self, name: &str) -> Result<(), CardError> {
        self.next = Some(Presentation::Card(test_card_named(name).ok_or_else(
            || CardError::Unreadable(format!("no test card named {name:?}")),
        )?));
        Ok(())
    }

    /// Makes the next read a scan of payment code `code`.
    pub fn scan(&mut self, code: &str) {
        self.next = Some(Presentation::Code(code.to_string()));
    }
}

impl CardReader for SimulatedReader {
    fn read(&mut self, _amount: u64) -> Result<PresentedCard, CardError> {
        self.next
            .take()
            .ok_or_else(|| CardError::Unreadable("no card presented".into()))?
            .present()
    }
}

/// A card number keyed by the cashier.
pub fn manual_entry(
    pan: &str,
    expiry: &str,
    pin: Option<&str>,
) -> Result<PresentedCard, CardError> {
    if !(12..=19).contains(&pan.len()) || !pan.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CardError::Unreadable(
            "card number must be 12 to 19 digits".into(),
        ));
    }
    let pin = pin
        .map(Pin::new)
        .transpose()
        .map_err(|e| CardError::Unreadable(e.to_string()))?;
    Ok(PresentedCard {
        card: CardData {
            pan: pan.into(),
            expiry: expiry.into(),
            entry: Entry::Manual,
            offline_allowed: false,
        },
        pin,
    })
}

/// The simulated PIN pad: enciphers the entered PIN as an ISO 9564 format 4
/// block bound to the PAN under the transaction's DUKPT PIN key. The PIN
/// never leaves this function in clear.
pub fn pin_block(pin: &Pin, pan: &str, key: &PinKey) -> Result<Vec<u8>, PinBlockError> {
    let pan = Pan::new(pan)?;
    let clear = encode(Format::Iso4, pin, Some(&pan))?;
    encipher(key, Format::Iso4, &clear, Some(&pan))
}
