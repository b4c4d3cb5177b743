//! `cup`: the UnionPay-style terminal dialect that posnet's terminal and host
//! speak. ISO 8583:1987 with a BCD MTI, binary bitmaps, packed BCD numerics
//! with BCD length prefixes (LL in one byte, LLL in two), and ASCII for the
//! text elements 37, 38, 39, 41, 42, 44, 49, 54 and 63.
//!
//! Field 52 is the one departure from UnionPay: an LLVAR of up to 16
//! bytes, so that ISO 9564 format 4 (AES) PIN blocks fit.
//!
//! Odd-length BCD values are left-aligned with a trailing `0` nibble, except
//! field 23 (card sequence number), which is right-aligned, following the
//! UnionPay POS terminal message specification.

use crate::spec::{
    Align, BitmapEncoding, Content, Dialect, Encoding, FieldSpec, Length, MtiEncoding,
    PrefixEncoding,
};

const LEFT: Encoding = Encoding::Bcd {
    align: Align::Left,
    pad: 0,
};
const RIGHT: Encoding = Encoding::Bcd {
    align: Align::Right,
    pad: 0,
};

const fn spec(
    name: &'static str,
    content: Content,
    length: Length,
    encoding: Encoding,
) -> FieldSpec {
    FieldSpec {
        name,
        content,
        length,
        encoding,
        prefix: PrefixEncoding::Bcd,
    }
}
const fn n(name: &'static str, len: u16) -> FieldSpec {
    spec(name, Content::N, Length::Fixed(len), LEFT)
}
const fn text(name: &'static str, content: Content, length: Length) -> FieldSpec {
    spec(name, content, length, Encoding::Ascii)
}
const fn bin(name: &'static str, length: Length) -> FieldSpec {
    spec(name, Content::B, length, Encoding::Binary)
}

/// The UnionPay-style POS terminal dialect.
pub static CUP: Dialect = Dialect {
    name: "cup",
    description: "UnionPay-style POS terminal dialect: BCD MTI, binary bitmap, BCD numerics",
    mti: MtiEncoding::Bcd,
    bitmap: BitmapEncoding::Binary,
    fields: Dialect::table(&[
        (
            2,
            spec(
                "Primary account number",
                Content::N,
                Length::llvar(19),
                LEFT,
            ),
        ),
        (3, n("Processing code", 6)),
        (4, n("Amount, transaction", 12)),
        (11, n("System trace audit number", 6)),
        (12, n("Time, local transaction (hhmmss)", 6)),
        (13, n("Date, local transaction (MMDD)", 4)),
        (14, n("Date, expiration (YYMM)", 4)),
        (15, n("Date, settlement (MMDD)", 4)),
        (22, n("Point-of-service entry mode", 3)),
        (
            23,
            spec("Card sequence number", Content::N, Length::Fixed(3), RIGHT),
        ),
        (25, n("Point-of-service condition code", 2)),
        (26, n("Point-of-service PIN capture code", 2)),
        (
            32,
            spec(
                "Acquiring institution id",
                Content::N,
                Length::llvar(11),
                LEFT,
            ),
        ),
        (
            35,
            spec("Track 2 data", Content::Z, Length::llvar(37), LEFT),
        ),
        (
            36,
            spec("Track 3 data", Content::Z, Length::lllvar(104), LEFT),
        ),
        (
            37,
            text("Retrieval reference number", Content::An, Length::Fixed(12)),
        ),
        (
            38,
            text("Authorization id response", Content::An, Length::Fixed(6)),
        ),
        (39, text("Response code", Content::An, Length::Fixed(2))),
        (
            41,
            text("Card acceptor terminal id", Content::Ans, Length::Fixed(8)),
        ),
        (
            42,
            text(
                "Card acceptor id (merchant)",
                Content::Ans,
                Length::Fixed(15),
            ),
        ),
        (
            44,
            text("Additional response data", Content::Ans, Length::llvar(25)),
        ),
        (
            48,
            spec(
                "Additional data (settlement totals)",
                Content::N,
                Length::lllvar(322),
                LEFT,
            ),
        ),
        (
            49,
            text("Currency code, transaction", Content::An, Length::Fixed(3)),
        ),
        // UnionPay fixes 52 at 8 bytes, which predates AES PIN blocks; posnet
        // prefixes it (LL, bytes) so it carries an 8-byte TDES block or a
        // 16-byte ISO 9564 format 4 block.
        (52, bin("PIN block", Length::llvar(16))),
        (53, n("Security related control information", 16)),
        (
            54,
            text(
                "Additional amounts (balance)",
                Content::Ans,
                Length::lllvar(20),
            ),
        ),
        (
            55,
            bin("ICC system related data (BER-TLV)", Length::lllvar(255)),
        ),
        (
            60,
            spec(
                "Reserved private: type, batch, network management",
                Content::N,
                Length::lllvar(17),
                LEFT,
            ),
        ),
        (
            61,
            spec(
                "Original message data",
                Content::N,
                Length::lllvar(29),
                LEFT,
            ),
        ),
        (
            62,
            bin(
                "Reserved private: parameters, key serial number",
                Length::lllvar(512),
            ),
        ),
        (
            63,
            text(
                "Reserved private: operator, card scheme",
                Content::Ans,
                Length::lllvar(163),
            ),
        ),
        (64, bin("Message authentication code", Length::Fixed(8))),
        (90, n("Original data elements", 42)),
        (
            100,
            spec(
                "Receiving institution id",
                Content::N,
                Length::llvar(11),
                LEFT,
            ),
        ),
        (102, text("Account id 1", Content::Ans, Length::llvar(28))),
        (103, text("Account id 2", Content::Ans, Length::llvar(28))),
        (
            128,
            bin("Message authentication code (secondary)", Length::Fixed(8)),
        ),
    ]),
};
