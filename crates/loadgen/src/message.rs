//! A simulated terminal's side of the `cup` dialect: its identity and AES
//! DUKPT register, the requests it builds (sign-on, sale, refund, reversal,
//! balance inquiry), sealing them (KSN in field 62, ISO 9564 format 4 PIN
//! block in 52, AES-CMAC in 64) and checking the MAC of a response.

use iso8583::dialect::CUP;
use iso8583::message_set::TxnType;
use iso8583::text::mask_pan;
use iso8583::{Field60, Message, Mti};
use paycrypto::dukpt::aes::{MacDirection, Terminal, mac_key, pin_key};
use paycrypto::pinblock::{Format, Pan, Pin, encipher, encode};
use paycrypto::{Kbpk, KeyAlgorithm, MacKey};
use pki::EnrollmentBundle;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Largest STAN (field 11 is six digits); the counter wraps to 1 after it.
pub const MAX_STAN: u32 = 999_999;

/// Building or reading a message failed.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The enrollment bundle's key material is unusable.
    #[error("terminal {terminal}: enrollment bundle: {reason}")]
    Bundle {
        /// Field 41 of the bundle.
        terminal: String,
        /// What is wrong.
        reason: String,
    },
    /// The DUKPT register is exhausted or a key derivation failed.
    #[error("terminal {terminal}: DUKPT: {source}")]
    Dukpt {
        /// Field 41.
        terminal: String,
        /// The cause.
        source: paycrypto::dukpt::DukptError,
    },
    /// The PIN or PAN cannot form a PIN block.
    #[error("terminal {terminal}: PIN block: {source}")]
    PinBlock {
        /// Field 41.
        terminal: String,
        /// The cause.
        source: paycrypto::pinblock::PinBlockError,
    },
    /// A value does not fit its field.
    #[error("terminal {terminal}: field value: {source}")]
    Value {
        /// Field 41.
        terminal: String,
        /// The cause.
        source: iso8583::ValueError,
    },
    /// The request could not be encoded.
    #[error("terminal {terminal}: encoding: {source}")]
    Encode {
        /// Field 41.
        terminal: String,
        /// The cause.
        source: iso8583::EncodeError,
    },
    /// The MAC could not be computed.
    #[error("terminal {terminal}: MAC: {source}")]
    Mac {
        /// Field 41.
        terminal: String,
        /// The cause.
        source: paycrypto::mac::MacError,
    },
}

/// A response that cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// The bytes are not a `cup` message.
    #[error("response unreadable: {0}")]
    Decode(#[from] iso8583::DecodeError),
    /// A MAC was expected and is missing or wrong.
    #[error("response MAC: {0}")]
    Mac(String),
}

/// A card the simulated terminal presents (manual entry: PAN in field 2,
/// expiry in 14). The PIN is zeroized on drop; `Debug` masks the PAN and
/// never shows the PIN.
#[derive(Clone)]
pub struct Card {
    /// Primary account number.
    pub pan: String,
    /// Expiry, YYMM, sent in field 14 when present.
    pub expiry: Option<String>,
    /// PIN entered on the PIN pad, when the card has one.
    pub pin: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Card")
            .field("pan", &mask_pan(&self.pan))
            .field("expiry", &self.expiry)
            .field("pin", &self.pin.as_ref().map(|_| "redacted"))
            .finish()
    }
}

/// A request ready to send, with the key that must MAC its response.
pub struct Sealed {
    /// The request as sent (KSN, PIN block and MAC included).
    pub request: Message,
    /// Its encoding, MTI onwards.
    pub wire: Vec<u8>,
    /// The MAC-verification key of the request's KSN, when it carried a MAC.
    pub response_key: Option<MacKey>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("mti", &self.request.mti())
            .field("stan", &self.request.stan())
            .finish_non_exhaustive()
    }
}

/// A simulated terminal: identity (fields 41 and 42), batch and STAN
/// counters, and the AES DUKPT register loaded from its enrollment bundle.
pub struct SimTerminal {
    /// Field 41.
    pub terminal_id: String,
    /// Field 42.
    pub merchant_id: String,
    /// Batch number (60.2).
    pub batch: u32,
    /// The last STAN used (0 before the first request).
    pub stan: u32,
    dukpt: Terminal,
}

impl std::fmt::Debug for SimTerminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTerminal")
            .field("terminal_id", &self.terminal_id)
            .field("batch", &self.batch)
            .field("stan", &self.stan)
            .finish_non_exhaustive()
    }
}

/// The mutual-TLS client configuration of an enrolled terminal.
pub fn tls_config(bundle: &EnrollmentBundle) -> Result<Arc<rustls::ClientConfig>, MessageError> {
    pki::tls::client_config(
        &bundle.ca_cert_pem,
        &bundle.cert_pem,
        bundle.key_pem.as_bytes(),
    )
    .map_err(|e| MessageError::Bundle {
        terminal: bundle.terminal_id.clone(),
        reason: e.to_string(),
    })
}

impl SimTerminal {
    /// Loads the terminal of `bundle`: unwraps its initial key (a TR-31
    /// block) under the key-transport key `ktk`, as a key-injection facility
    /// would, and starts at KSN counter 1, batch 1, STAN 1.
    pub fn from_bundle(bundle: &EnrollmentBundle, ktk: &[u8]) -> Result<Self, MessageError> {
        let bad = |reason: String| MessageError::Bundle {
            terminal: bundle.terminal_id.clone(),
            reason,
        };
        let kbpk = Kbpk::new(KeyAlgorithm::Aes256, ktk).map_err(|e| bad(e.to_string()))?;
        let ik = paycrypto::tr31::unwrap(&kbpk, &bundle.initial_key_block)
            .and_then(|block| block.initial_key())
            .map_err(|e| bad(format!("initial key block: {e}")))?;
        let ikid: [u8; 8] = hex::decode(&bundle.initial_key_id)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("initial key id is not 8 bytes of hex".into()))?;
        let dukpt = Terminal::load(ik, ikid).map_err(|source| MessageError::Dukpt {
            terminal: bundle.terminal_id.clone(),
            source,
        })?;
        Ok(SimTerminal {
            terminal_id: bundle.terminal_id.clone(),
            merchant_id: bundle.merchant_id.clone(),
            batch: 1,
            stan: 0,
            dukpt,
        })
    }

    fn value_error(&self, source: iso8583::ValueError) -> MessageError {
        MessageError::Value {
            terminal: self.terminal_id.clone(),
            source,
        }
    }

    /// A request of `mti` with a fresh STAN in 11, 41, 42 and 60 (60.1
    /// `txn_type`, 60.2 the batch, 60.3 `network_code` or 000), plus `fields`.
    pub fn request(
        &mut self,
        mti: Mti,
        txn_type: u8,
        network_code: Option<u16>,
        fields: &[(u8, &str)],
    ) -> Message {
        self.stan = if self.stan >= MAX_STAN {
            1
        } else {
            self.stan + 1
        };
        let mut m = Message::new(mti);
        m.set_stan(self.stan).expect("STAN is at most six digits");
        m.set(41, self.terminal_id.as_str())
            .set(42, self.merchant_id.as_str());
        let f60 = Field60 {
            transaction_type: txn_type,
            batch: self.batch % 1_000_000,
            network_code: Some(network_code.unwrap_or(0)),
            rest: String::new(),
        };
        m.set(60, f60.to_text().expect("60.1 and 60.2 within range"));
        for (f, v) in fields {
            m.set(*f, *v);
        }
        m
    }

    /// Sign-on (0800, 60.3 = 003): sent in clear, answered with parameters.
    pub fn sign_on(&mut self) -> Message {
        self.request(mti("0800"), 0, Some(3), &[])
    }

    /// Fields 2, 14 (when known) and 22 (012 manual entry, with PIN capability
    /// 021 when the card has a PIN) and 26 for a PIN.
    fn card_fields(m: &mut Message, card: &Card) {
        m.set(2, card.pan.as_str());
        if let Some(expiry) = &card.expiry {
            m.set(14, expiry.as_str());
        }
        m.set(22, "021");
        if card.pin.is_some() {
            m.set(26, "12");
        }
    }

    /// A sale (0200, 000000, 60.1 = 22) of `amount` minor units in `currency`.
    pub fn sale(
        &mut self,
        card: &Card,
        amount: u64,
        currency: u16,
    ) -> Result<Message, MessageError> {
        let mut m = self.financial(TxnType::Sale, card, currency, &[]);
        m.set_amount(amount).map_err(|e| self.value_error(e))?;
        Ok(m)
    }

    /// A balance inquiry (0200, 310000, 60.1 = 01).
    pub fn balance(&mut self, card: &Card, currency: u16) -> Message {
        self.financial(TxnType::Balance, card, currency, &[])
    }

    /// A request of the message set: MTI, 3, 25 and 60.1 of `txn`, the
    /// card's fields, 49 and `fields`.
    fn financial(
        &mut self,
        txn: TxnType,
        card: &Card,
        currency: u16,
        fields: &[(u8, &str)],
    ) -> Message {
        let codes = txn.codes();
        let currency = format!("{currency:03}");
        let mut m = self.request(
            mti(codes.mti),
            codes.type_code,
            None,
            &[
                (3, codes.processing_code),
                (25, codes.condition_code),
                (49, &currency),
            ],
        );
        for (f, v) in fields {
            m.set(*f, *v);
        }
        Self::card_fields(&mut m, card);
        m
    }

    /// A refund (0220, 200000, 60.1 = 25) of `amount` against the sale of
    /// batch `original_batch`, STAN `original_stan`, made on `original_date`
    /// (MMDD): field 61.
    pub fn refund(
        &mut self,
        card: &Card,
        amount: u64,
        currency: u16,
        original_batch: u32,
        original_stan: u32,
        original_date: &str,
    ) -> Result<Message, MessageError> {
        let f61 = format!(
            "{:06}{:06}{:0>4}",
            original_batch % 1_000_000,
            original_stan % 1_000_000,
            original_date.get(..4).unwrap_or("0000")
        );
        let mut m = self.financial(TxnType::Refund, card, currency, &[(61, &f61)]);
        m.remove(26);
        m.set_amount(amount).map_err(|e| self.value_error(e))?;
        Ok(m)
    }

    /// The reversal (0400) of `original`: its STAN, processing code, amount,
    /// card data, 25, 49 and 60, and `reason` in 39 (`98` no response, `06`
    /// cancelled). It takes no STAN of its own, and neither PIN nor KSN.
    pub fn reversal(&self, original: &Message, reason: &str) -> Message {
        let mut m = Message::new(mti("0400"));
        for field in [2, 3, 4, 11, 14, 22, 23, 25, 35, 41, 42, 49, 55, 60, 61] {
            if let Some(v) = original.get(field) {
                m.set(field, v);
            }
        }
        m.set(39, reason);
        m
    }

    /// Adds the next KSN (62), the PIN block of `pin` (52, ISO 9564 format 4
    /// under the transaction's PIN key, bound to field 2) and the MAC (64,
    /// AES-CMAC under the MAC-generation key), and encodes the request.
    pub fn seal(&mut self, mut m: Message, pin: Option<&str>) -> Result<Sealed, MessageError> {
        let terminal = || self.terminal_id.clone();
        let (ksn, tk) = self
            .dukpt
            .next_transaction()
            .map_err(|source| MessageError::Dukpt {
                terminal: terminal(),
                source,
            })?;
        let dukpt = |source| MessageError::Dukpt {
            terminal: terminal(),
            source,
        };
        let generate =
            mac_key(&tk, &ksn, MacDirection::Generate, KeyAlgorithm::Aes128).map_err(dukpt)?;
        let verify =
            mac_key(&tk, &ksn, MacDirection::Verify, KeyAlgorithm::Aes128).map_err(dukpt)?;
        if let Some(pin) = pin {
            let pin_error = |source| MessageError::PinBlock {
                terminal: terminal(),
                source,
            };
            let key = pin_key(&tk, &ksn, KeyAlgorithm::Aes128).map_err(dukpt)?;
            let pan = Pan::new(m.pan().unwrap_or("")).map_err(pin_error)?;
            let clear = Pin::new(pin)
                .and_then(|pin| encode(Format::Iso4, &pin, Some(&pan)))
                .map_err(pin_error)?;
            let block = encipher(&key, Format::Iso4, &clear, Some(&pan)).map_err(pin_error)?;
            m.set(52, block);
        }
        m.set(62, ksn.as_bytes());
        let wire = CUP
            .try_encode_with_mac(&m, |scope| {
                paycrypto::mac::generate(&generate, paycrypto::mac::Algorithm::Cmac, scope)
                    .map(|mac| mac[..8].to_vec())
            })
            .map_err(|e| match e {
                iso8583::MacEncodeError::Encode(source) => MessageError::Encode {
                    terminal: terminal(),
                    source,
                },
                iso8583::MacEncodeError::Mac(source) => MessageError::Mac {
                    terminal: terminal(),
                    source,
                },
            })?;
        Ok(Sealed {
            request: m,
            wire,
            response_key: Some(verify),
        })
    }

    /// Encodes a request sent without KSN and MAC (network management).
    pub fn plain(&self, m: Message) -> Result<Sealed, MessageError> {
        let wire = CUP.encode(&m).map_err(|source| MessageError::Encode {
            terminal: self.terminal_id.clone(),
            source,
        })?;
        Ok(Sealed {
            request: m,
            wire,
            response_key: None,
        })
    }
}

/// An MTI from a literal (of this module or the message set).
fn mti(text: &str) -> Mti {
    Mti::new(text).expect("MTI literal")
}

/// Decodes a response and, when `key` is given, checks its MAC (field 64,
/// AES-CMAC under the request's MAC-verification key). A response without a
/// MAC passes only if it is one the host never MACs: an early answer (`30`,
/// `12`, `A0`, `96`) that the caller must treat as such.
pub fn open_response(wire: &[u8], key: Option<&MacKey>) -> Result<Message, ResponseError> {
    let (response, scope) = CUP.decode_with_mac_scope(wire)?;
    if let (Some(key), Some(scope)) = (key, scope) {
        let mac = response
            .get(64)
            .ok_or_else(|| ResponseError::Mac("field 64 missing".into()))?;
        paycrypto::mac::verify(key, paycrypto::mac::Algorithm::Cmac, scope, mac)
            .map_err(|e| ResponseError::Mac(e.to_string()))?;
    }
    Ok(response)
}
