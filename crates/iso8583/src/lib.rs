//! ISO 8583:1987 messages for posnet: the message model, dialects as data,
//! packing and unpacking, framing, BER-TLV chip data and card-data masking.
//!
//! No I/O: bytes in, messages out, and the reverse. The optional `codec`
//! feature adds a `tokio_util` codec over the same framing.
//!
//! A dialect is a table of [`FieldSpec`]s; two ship with the crate:
//! [`dialect::CUP`], the UnionPay-style terminal dialect, and
//! [`dialect::ISO87ASCII`], byte-compatible with pyiso8583's `default_ascii`.
//! No crate on crates.io offers table-driven dialects with BCD padding rules,
//! total decoding with offsets and a borrowed MAC scope, so the codec is ours.
//!
//! ```
//! use iso8583::{dialect::CUP, Message, Mti};
//! let mut sale = Message::new(Mti::new("0200")?);
//! sale.set(3, "000000").set(25, "00").set(41, "T0000001");
//! sale.set_amount(1_250)?.set_stan(17)?;
//! let wire = CUP.encode(&sale)?;
//! assert_eq!(CUP.decode(&wire)?, sale);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod codec;
pub mod dialect;
pub mod error;
pub mod field60;
pub mod frame;
pub mod message;
pub mod message_set;
pub mod params;
pub mod spec;
pub mod text;
pub mod tlv;

pub use codec::{MacEncodeError, mac_field_of};
pub use error::{DecodeError, DecodeErrorKind, Element, EncodeError, EncodeErrorKind, ValueError};
pub use field60::Field60;
pub use frame::{Frame, FrameError, FrameLayout, Tpdu};
pub use message::{Message, Mti};
pub use spec::{Dialect, FieldSpec};
