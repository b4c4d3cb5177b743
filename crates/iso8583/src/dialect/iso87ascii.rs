//! `iso87ascii`: ISO 8583:1987 written entirely in ASCII — the layout of
//! pyiso8583's `default_ascii` spec, byte for byte: ASCII MTI, bitmaps as 16
//! hexadecimal characters, ASCII length prefixes, binary elements (52, 64,
//! 96, 128 and the ICC data of 55) as hexadecimal text whose length counts
//! characters. Content types follow ISO 8583:1987 §4.

use crate::spec::{
    BitmapEncoding, Content, Dialect, Encoding, FieldSpec, Length, MtiEncoding, PrefixEncoding,
};

const fn spec(name: &'static str, content: Content, length: Length) -> FieldSpec {
    let encoding = match content {
        Content::B => Encoding::HexAscii,
        _ => Encoding::Ascii,
    };
    FieldSpec {
        name,
        content,
        length,
        encoding,
        prefix: PrefixEncoding::Ascii,
    }
}
const fn n(name: &'static str, len: u16) -> FieldSpec {
    spec(name, Content::N, Length::Fixed(len))
}
const fn an(name: &'static str, len: u16) -> FieldSpec {
    spec(name, Content::An, Length::Fixed(len))
}
const fn ans_lll(name: &'static str, max: u16) -> FieldSpec {
    spec(name, Content::Ans, Length::lllvar(max))
}
const fn b64(name: &'static str) -> FieldSpec {
    spec(name, Content::B, Length::Fixed(16))
}

/// ISO 8583:1987 in ASCII, identical on the wire to pyiso8583's `default_ascii`.
pub static ISO87ASCII: Dialect = Dialect {
    name: "iso87ascii",
    description: "ISO 8583:1987 ASCII (pyiso8583 default_ascii layout)",
    mti: MtiEncoding::Ascii,
    bitmap: BitmapEncoding::HexAscii,
    fields: Dialect::table(&[
        (
            2,
            spec("Primary account number", Content::N, Length::llvar(19)),
        ),
        (3, n("Processing code", 6)),
        (4, n("Amount, transaction", 12)),
        (5, n("Amount, settlement", 12)),
        (6, n("Amount, cardholder billing", 12)),
        (7, n("Transmission date and time", 10)),
        (8, n("Amount, cardholder billing fee", 8)),
        (9, n("Conversion rate, settlement", 8)),
        (10, n("Conversion rate, cardholder billing", 8)),
        (11, n("System trace audit number", 6)),
        (12, n("Time, local transaction", 6)),
        (13, n("Date, local transaction", 4)),
        (14, n("Date, expiration", 4)),
        (15, n("Date, settlement", 4)),
        (16, n("Date, conversion", 4)),
        (17, n("Date, capture", 4)),
        (18, n("Merchant type", 4)),
        (19, n("Acquiring institution country code", 3)),
        (20, n("PAN extended, country code", 3)),
        (21, n("Forwarding institution country code", 3)),
        (22, n("Point-of-service entry mode", 3)),
        (23, n("Card sequence number", 3)),
        (24, n("Network international identifier", 3)),
        (25, n("Point-of-service condition code", 2)),
        (26, n("Point-of-service PIN capture code", 2)),
        (27, n("Authorizing id response length", 1)),
        // x+n 8: a C/D sign letter then eight digits.
        (28, an("Amount, transaction fee", 9)),
        (29, an("Amount, settlement fee", 9)),
        (30, an("Amount, transaction processing fee", 9)),
        (31, an("Amount, settlement processing fee", 9)),
        (
            32,
            spec("Acquiring institution id", Content::N, Length::llvar(11)),
        ),
        (
            33,
            spec("Forwarding institution id", Content::N, Length::llvar(11)),
        ),
        (
            34,
            spec(
                "Primary account number, extended",
                Content::Ans,
                Length::llvar(28),
            ),
        ),
        (35, spec("Track 2 data", Content::Z, Length::llvar(37))),
        (36, spec("Track 3 data", Content::Z, Length::lllvar(104))),
        (37, an("Retrieval reference number", 12)),
        (38, an("Authorization id response", 6)),
        (39, an("Response code", 2)),
        (40, an("Service restriction code", 3)),
        (
            41,
            spec("Card acceptor terminal id", Content::Ans, Length::Fixed(8)),
        ),
        (
            42,
            spec("Card acceptor id code", Content::Ans, Length::Fixed(15)),
        ),
        (
            43,
            spec(
                "Card acceptor name/location",
                Content::Ans,
                Length::Fixed(40),
            ),
        ),
        (
            44,
            spec("Additional response data", Content::An, Length::llvar(25)),
        ),
        // Track 1 carries '^' separators and spaces, so ans in practice.
        (45, spec("Track 1 data", Content::Ans, Length::llvar(76))),
        (46, ans_lll("Additional data, ISO", 999)),
        (47, ans_lll("Additional data, national", 999)),
        (48, ans_lll("Additional data, private", 999)),
        (49, an("Currency code, transaction", 3)),
        (50, an("Currency code, settlement", 3)),
        (51, an("Currency code, cardholder billing", 3)),
        (52, b64("PIN data")),
        (53, n("Security related control information", 16)),
        (54, ans_lll("Additional amounts", 240)),
        (
            55,
            spec("ICC system related data", Content::B, Length::lllvar(510)),
        ),
        (56, ans_lll("Reserved ISO", 999)),
        (57, ans_lll("Reserved national", 999)),
        (58, ans_lll("Reserved national", 999)),
        (59, ans_lll("Reserved national", 999)),
        (60, ans_lll("Reserved national", 999)),
        (61, ans_lll("Reserved private", 999)),
        (62, ans_lll("Reserved private", 999)),
        (63, ans_lll("Reserved private", 999)),
        (64, b64("Message authentication code")),
        (66, n("Settlement code", 1)),
        (67, n("Extended payment code", 2)),
        (68, n("Receiving institution country code", 3)),
        (69, n("Settlement institution country code", 3)),
        (70, n("Network management information code", 3)),
        (71, n("Message number", 4)),
        (72, n("Message number, last", 4)),
        (73, n("Date, action", 6)),
        (74, n("Credits, number", 10)),
        (75, n("Credits, reversal number", 10)),
        (76, n("Debits, number", 10)),
        (77, n("Debits, reversal number", 10)),
        (78, n("Transfer, number", 10)),
        (79, n("Transfer, reversal number", 10)),
        (80, n("Inquiries, number", 10)),
        (81, n("Authorizations, number", 10)),
        (82, n("Credits, processing fee amount", 12)),
        (83, n("Credits, transaction fee amount", 12)),
        (84, n("Debits, processing fee amount", 12)),
        (85, n("Debits, transaction fee amount", 12)),
        (86, n("Credits, amount", 16)),
        (87, n("Credits, reversal amount", 16)),
        (88, n("Debits, amount", 16)),
        (89, n("Debits, reversal amount", 16)),
        (90, n("Original data elements", 42)),
        (91, an("File update code", 1)),
        (92, an("File security code", 2)),
        (93, an("Response indicator", 5)),
        (94, an("Service indicator", 7)),
        (95, an("Replacement amounts", 42)),
        (96, b64("Message security code")),
        (97, an("Amount, net settlement", 17)),
        (98, spec("Payee", Content::Ans, Length::Fixed(25))),
        (
            99,
            spec("Settlement institution id", Content::N, Length::llvar(11)),
        ),
        (
            100,
            spec("Receiving institution id", Content::N, Length::llvar(11)),
        ),
        (101, spec("File name", Content::Ans, Length::llvar(17))),
        (102, spec("Account id 1", Content::Ans, Length::llvar(28))),
        (103, spec("Account id 2", Content::Ans, Length::llvar(28))),
        (104, ans_lll("Transaction description", 100)),
        (105, ans_lll("Reserved ISO", 999)),
        (106, ans_lll("Reserved ISO", 999)),
        (107, ans_lll("Reserved ISO", 999)),
        (108, ans_lll("Reserved ISO", 999)),
        (109, ans_lll("Reserved ISO", 999)),
        (110, ans_lll("Reserved ISO", 999)),
        (111, ans_lll("Reserved ISO", 999)),
        (112, ans_lll("Reserved national", 999)),
        (113, ans_lll("Reserved national", 999)),
        (114, ans_lll("Reserved national", 999)),
        (115, ans_lll("Reserved national", 999)),
        (116, ans_lll("Reserved national", 999)),
        (117, ans_lll("Reserved national", 999)),
        (118, ans_lll("Reserved national", 999)),
        (119, ans_lll("Reserved national", 999)),
        (120, ans_lll("Reserved private", 999)),
        (121, ans_lll("Reserved private", 999)),
        (122, ans_lll("Reserved private", 999)),
        (123, ans_lll("Reserved private", 999)),
        (124, ans_lll("Reserved private", 999)),
        (125, ans_lll("Reserved private", 999)),
        (126, ans_lll("Reserved private", 999)),
        (127, ans_lll("Reserved private", 999)),
        (128, b64("Message authentication code")),
    ]),
};
