//! The pairing code a terminal shows and a phone scans: everything a Sale
//! system needs to reach the terminal and trust it.
//!
//! The code is a URI, so that it travels as a QR code, a link or typed text:
//!
//! ```text
//! posnet-pair://192.168.1.20:8443?fp=<64 hex>&poi=<POIID>&kid=<key id>&kv=<key version>&pass=<passphrase>
//! ```
//!
//! - `fp`: SHA-256 of the terminal's TLS certificate (DER), which the phone
//!   pins: a different certificate is refused even if some CA signed it;
//! - `poi`: the terminal's `POIID` for message headers;
//! - `kid`, `kv`, `pass`: the nexo message-security key
//!   ([`paycrypto::nexo::NexoKey`]) the terminal accepts for this pairing.
//!
//! Parameters are URL-encoded; unknown parameters are refused, so that a
//! code from a newer terminal is not half understood. The passphrase is a
//! secret: it is zeroized on drop and never shown by `Debug`.

use std::fmt;
use zeroize::Zeroizing;

/// The URI scheme of pairing codes.
pub const SCHEME: &str = "posnet-pair";

/// Longest code accepted, in bytes: a code is typed or scanned, never large.
pub const MAX_CODE_LEN: usize = 1024;

/// What a phone needs to pay through one terminal.
#[derive(Clone, PartialEq, Eq)]
pub struct Pairing {
    /// Host name or IP address of the terminal.
    pub host: String,
    /// Port of its nexo endpoint.
    pub port: u16,
    /// SHA-256 of its TLS certificate (DER).
    pub cert_sha256: [u8; 32],
    /// Its `POIID`.
    pub poi_id: String,
    /// nexo `KeyIdentifier`.
    pub key_identifier: String,
    /// nexo `KeyVersion`.
    pub key_version: u64,
    /// nexo passphrase.
    pub passphrase: Zeroizing<String>,
}

impl fmt::Debug for Pairing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pairing")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("cert_sha256", &hex::encode(self.cert_sha256))
            .field("poi_id", &self.poi_id)
            .field("key_identifier", &self.key_identifier)
            .field("key_version", &self.key_version)
            .field("passphrase", &"<redacted>")
            .finish()
    }
}

/// A pairing code that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    /// Longer than [`MAX_CODE_LEN`].
    #[error("pairing code is {0} bytes; at most {MAX_CODE_LEN} are accepted")]
    TooLong(usize),
    /// Not a `posnet-pair://` URI.
    #[error("not a posnet pairing code (it must start with {SCHEME}://)")]
    Scheme,
    /// The address part is not `host:port`.
    #[error("pairing code address {0:?} is not host:port")]
    Address(String),
    /// A parameter is missing.
    #[error("pairing code lacks its {0:?} parameter")]
    Missing(&'static str),
    /// A parameter appears twice or is not known.
    #[error("pairing code parameter {0:?} is repeated or unknown")]
    Parameter(String),
    /// A parameter's value is unusable.
    #[error("pairing code parameter {name:?}: {why}")]
    Value {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl Pairing {
    /// The code: a `posnet-pair://` URI.
    pub fn to_code(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("fp", &hex::encode(self.cert_sha256))
            .append_pair("poi", &self.poi_id)
            .append_pair("kid", &self.key_identifier)
            .append_pair("kv", &self.key_version.to_string())
            .append_pair("pass", &self.passphrase)
            .finish();
        format!("{SCHEME}://{host}:{}?{query}", self.port)
    }

    /// Reads a code, checking every part before anything is used.
    pub fn from_code(code: &str) -> Result<Self, PairingError> {
        let code = code.trim();
        if code.len() > MAX_CODE_LEN {
            return Err(PairingError::TooLong(code.len()));
        }
        let rest = code
            .strip_prefix(SCHEME)
            .and_then(|r| r.strip_prefix("://"))
            .ok_or(PairingError::Scheme)?;
        let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, port) = split_address(address)?;

        let mut fp = None;
        let mut poi = None;
        let mut kid = None;
        let mut kv = None;
        let mut pass = None;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "fp" => &mut fp,
                "poi" => &mut poi,
                "kid" => &mut kid,
                "kv" => &mut kv,
                "pass" => &mut pass,
                _ => return Err(PairingError::Parameter(name.into_owned())),
            };
            if slot.replace(Zeroizing::new(value.into_owned())).is_some() {
                return Err(PairingError::Parameter(name.into_owned()));
            }
        }
        let fp = fp.ok_or(PairingError::Missing("fp"))?;
        let mut cert_sha256 = [0u8; 32];
        hex::decode_to_slice(fp.as_str(), &mut cert_sha256).map_err(|_| PairingError::Value {
            name: "fp",
            why: "not 64 hexadecimal digits",
        })?;
        let poi_id = text("poi", poi)?;
        let key_identifier = text("kid", kid)?;
        let key_version = kv
            .ok_or(PairingError::Missing("kv"))?
            .parse::<u64>()
            .map_err(|_| PairingError::Value {
                name: "kv",
                why: "not a whole number",
            })?;
        let passphrase = pass.ok_or(PairingError::Missing("pass"))?;
        if passphrase.is_empty() {
            return Err(PairingError::Value {
                name: "pass",
                why: "empty",
            });
        }
        if passphrase.chars().any(|c| u32::from(c) > 0xFF) {
            // The key derivation reads the passphrase as Latin-1.
            return Err(PairingError::Value {
                name: "pass",
                why: "characters beyond Latin-1",
            });
        }
        Ok(Pairing {
            host,
            port,
            cert_sha256,
            poi_id: poi_id.to_string(),
            key_identifier: key_identifier.to_string(),
            key_version,
            passphrase,
        })
    }

    /// The nexo key of this pairing.
    pub fn key(&self) -> Result<paycrypto::nexo::NexoKey, paycrypto::nexo::NexoError> {
        paycrypto::nexo::NexoKey::derive(&self.passphrase, &self.key_identifier, self.key_version)
    }

    /// The fingerprint as the terminal prints it: colon-separated hex pairs.
    pub fn fingerprint(&self) -> String {
        fingerprint_text(&self.cert_sha256)
    }
}

/// A SHA-256 fingerprint as `AB:CD:...`, as browsers and `openssl x509
/// -fingerprint -sha256` print it.
pub fn fingerprint_text(sha256: &[u8; 32]) -> String {
    let hex = hex::encode_upper(sha256);
    let pairs: Vec<&str> = (0..32).map(|i| &hex[2 * i..2 * i + 2]).collect();
    pairs.join(":")
}

/// A required, non-empty, printable parameter of at most 64 characters
/// (nexo's POIID and KeyIdentifier are short tokens).
fn text(name: &'static str, value: Option<Zeroizing<String>>) -> Result<String, PairingError> {
    let value = value.ok_or(PairingError::Missing(name))?;
    if value.is_empty() || value.len() > 64 {
        return Err(PairingError::Value {
            name,
            why: "must be 1 to 64 characters",
        });
    }
    if !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(PairingError::Value {
            name,
            why: "must be printable ASCII without spaces",
        });
    }
    Ok(value.to_string())
}

/// `host:port` or `[v6]:port`.
fn split_address(address: &str) -> Result<(String, u16), PairingError> {
    let bad = || PairingError::Address(address.chars().take(80).collect());
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
        (host, port)
    } else {
        address.rsplit_once(':').ok_or_else(bad)?
    };
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    let port = port.parse::<u16>().ok().filter(|p| *p != 0);
    match (valid_host, port) {
        (true, Some(port)) => Ok((host.to_string(), port)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Pairing {
        Pairing {
            host: "192.168.1.20".into(),
            port: 8443,
            cert_sha256: [0xAB; 32],
            poi_id: "P400-T0000001".into(),
            key_identifier: "phone-1".into(),
            key_version: 3,
            passphrase: Zeroizing::new("a b&c=d%é".into()),
        }
    }

    #[test]
    fn round_trip_with_characters_that_need_escaping() {
        let code = sample().to_code();
        assert!(code.starts_with("posnet-pair://192.168.1.20:8443?fp=abab"));
        assert!(!code.contains(' '));
        assert_eq!(Pairing::from_code(&code).unwrap(), sample());
        let v6 = Pairing {
            host: "fe80::1".into(),
            ..sample()
        };
        assert!(v6.to_code().contains("//[fe80::1]:8443?"));
        assert_eq!(Pairing::from_code(&v6.to_code()).unwrap(), v6);
    }

    #[test]
    fn debug_hides_the_passphrase() {
        let shown = format!("{:?}", sample());
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("a b&c"));
    }

    #[test]
    fn every_bad_part_is_named() {
        let good = sample().to_code();
        let cases = [
            ("https://x:1?fp=", PairingError::Scheme),
            (
                "posnet-pair://nohost?fp=",
                PairingError::Address("nohost".into()),
            ),
            ("posnet-pair://h:0?fp=", PairingError::Address("h:0".into())),
            ("posnet-pair://h:1", PairingError::Missing("fp")),
            (
                &good.replace("fp=abab", "fp=zzab"),
                PairingError::Value {
                    name: "fp",
                    why: "not 64 hexadecimal digits",
                },
            ),
            (
                &good.replace("kv=3", "kv=x"),
                PairingError::Value {
                    name: "kv",
                    why: "not a whole number",
                },
            ),
            (
                &format!("{good}&kid=again"),
                PairingError::Parameter("kid".into()),
            ),
            (&format!("{good}&x=1"), PairingError::Parameter("x".into())),
            (
                &good.replace("poi=P400-T0000001", "poi=a+b"),
                PairingError::Value {
                    name: "poi",
                    why: "must be printable ASCII without spaces",
                },
            ),
        ];
        for (code, want) in cases {
            assert_eq!(Pairing::from_code(code).unwrap_err(), want, "{code}");
        }
        let long = format!("{good}{}", "a".repeat(MAX_CODE_LEN));
        assert!(matches!(
            Pairing::from_code(&long),
            Err(PairingError::TooLong(_))
        ));
    }

    #[test]
    fn fingerprints_print_as_openssl_does() {
        let text = fingerprint_text(&[0x0A; 32]);
        assert_eq!(text.len(), 32 * 3 - 1);
        assert!(text.starts_with("0A:0A:"));
    }
}
