//! docs/test-cards.md lists the simulated reader's catalog: its table is
//! checked here against `terminal::card::CATALOG`, so the two cannot drift.

use terminal::card::{CATALOG, TestCard};
use terminal::engine::Entry;
use terminal::receipt::money;

const BEGIN: &str = "<!-- catalog table: begin -->\n";
const END: &str = "<!-- catalog table: end -->";

fn amount(minor: u64) -> String {
    let (code, text) = money(minor, 156);
    format!("{text} {code}")
}

fn row(c: &TestCard) -> String {
    let pin = match (c.pin, c.entered_pin) {
        (None, _) => "none".to_string(),
        (Some(p), Some(e)) if p == e => format!("`{p}`"),
        (Some(p), Some(e)) => format!("`{p}` (`{e}` entered)"),
        (Some(p), None) => format!("`{p}` (none entered)"),
    };
    let entry = match c.entry {
        Entry::Swipe => "swipe",
        Entry::Chip => "chip",
        Entry::Contactless => "contactless",
        Entry::Manual => "keyed",
        Entry::Qr => "scanned code",
    };
    format!(
        "| `{}` | `{}` | {}/{} | {} | {} | {} | {} | {} | {} | {} |\n",
        c.name,
        c.pan,
        &c.expiry[2..],
        &c.expiry[..2],
        pin,
        entry,
        if c.offline_allowed { "yes" } else { "no" },
        amount(c.balance),
        amount(c.per_txn_limit),
        c.status,
        c.description,
    )
}

fn table() -> String {
    let mut t = String::from(
        "| name | card number | expiry | PIN | read by | offline | balance | limit per transaction | issuer status | what happens |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in CATALOG {
        t.push_str(&row(c));
    }
    t
}

#[test]
fn the_document_lists_the_catalog() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/test-cards.md");
    let doc = std::fs::read_to_string(path).expect("docs/test-cards.md");
    let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = doc.find(END).expect("end marker");
    let expected = table();
    assert!(
        doc[start..end] == expected,
        "docs/test-cards.md is out of date; its table should read:\n\n{expected}"
    );
}
