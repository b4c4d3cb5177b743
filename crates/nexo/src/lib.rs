//! nexo Sale-to-POI, the protocol between a Sale system (a cash register,
//! a cashier's phone) and a payment terminal (POI), as the JSON "Terminal
//! API" Adyen's terminals speak on the local network: the same field
//! names, enumerations and message security, so that cash-register
//! software written for that API drives a posnet terminal.
//!
//! - [`wire`]: the enumerations with their exact wire strings;
//! - [`model`]: the message bodies posnet speaks;
//! - [`amount`]: exact conversion of JSON decimal amounts to minor units;
//! - [`message`]: whole messages, `SaleToPOIRequest` and `SaleToPOIResponse`;
//! - [`inbound`]: reading a received message, plain or secured, and the
//!   nexo answer to every way it can fail;
//! - [`pairing`]: the code a terminal shows and a phone scans to pair;
//! - [`serial`]: the frame, ACK/NAK and retransmission of serial links
//!   (USB-serial, Bluetooth RFCOMM), sans-IO;
//! - `serial_io` (feature `tokio`): that link run over a tokio byte stream
//!   or a serial device, the terminal's side and the Sale system's.
//!
//! Without the `tokio` feature nothing here does I/O or reads a clock: time
//! is passed in.

pub mod amount;
pub mod inbound;
pub mod message;
pub mod model;
pub mod pairing;
pub mod serial;
#[cfg(feature = "tokio")]
pub mod serial_io;
pub mod wire;

pub use amount::{Amount, AmountError};
pub use inbound::{
    Inbound, InboundError, Refusal, Reply, Security, check_limit, parse_request, parse_response,
    screen,
};
pub use message::{RequestBody, ResponseBody, SaleToPoiRequest, SaleToPoiResponse, ToJson};
