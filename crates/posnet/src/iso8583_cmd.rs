//! `posnet iso8583`: decode and encode messages, for reading traces and
//! building test messages.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use iso8583::text::{masked_text, value_from_text, value_to_text};
use iso8583::{Dialect, Message, Mti, dialect};
use serde_json::{Map, Value, json};
use std::io::{BufRead, Write};

#[derive(Args)]
pub struct Iso8583Args {
    #[command(subcommand)]
    command: Iso8583Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DialectName {
    /// UnionPay-style POS terminal dialect (BCD, binary bitmap).
    Cup,
    /// ISO 8583:1987 ASCII, as pyiso8583's default_ascii.
    Iso87ascii,
}

impl DialectName {
    fn table(self) -> &'static Dialect {
        match self {
            DialectName::Cup => &dialect::CUP,
            DialectName::Iso87ascii => &dialect::ISO87ASCII,
        }
    }
}

#[derive(Subcommand)]
enum Iso8583Command {
    /// Decode a message given as hex (for iso87ascii: the hex of its ASCII
    /// bytes) and print it as JSON. Without HEX, decode one message per line
    /// of standard input and print one JSON object per line. Card data is
    /// masked (PAN first 6 and last 4) unless --show-pan.
    Decode {
        /// Dialect of the message.
        #[arg(long, value_enum)]
        dialect: DialectName,
        /// Show PANs, track data and PIN blocks in full.
        #[arg(long)]
        show_pan: bool,
        /// The message in hex, MTI first (no length prefix or TPDU).
        hex: Option<String>,
    },
    /// Print a dialect's field table: number, name, ISO attribute, length
    /// form, wire encoding. `--json` for programs, Markdown otherwise.
    Fields {
        /// The dialect.
        #[arg(long, value_enum)]
        dialect: DialectName,
        /// One JSON object per field instead of a Markdown table.
        #[arg(long)]
        json: bool,
    },
    /// Encode a message given as JSON (`{"mti": "0200", "fields": {"3": "000000"}}`;
    /// binary fields as hex) and print its hex. Without JSON, encode one
    /// message per line of standard input and print one hex line each.
    Encode {
        /// Dialect of the message.
        #[arg(long, value_enum)]
        dialect: DialectName,
        /// The message as JSON.
        json: Option<String>,
    },
}

/// Runs `posnet iso8583`.
pub fn run(args: Iso8583Args) -> Result<()> {
    match args.command {
        Iso8583Command::Decode {
            dialect,
            show_pan,
            hex,
        } => {
            let table = dialect.table();
            each_input(hex, |line| {
                decode(table, line, show_pan).map(|v| v.to_string())
            })
        }
        Iso8583Command::Fields { dialect, json } => print_fields(dialect.table(), json),
        Iso8583Command::Encode { dialect, json } => {
            let table = dialect.table();
            each_input(json, |line| encode(table, line))
        }
    }
}

/// Runs `f` on the single argument, or on every non-empty line of stdin.
/// In line mode a bad line prints `{"error": ...}` (decode) or `error: ...`
/// and processing goes on; the exit status reports whether any line failed.
fn each_input(arg: Option<String>, f: impl Fn(&str) -> Result<String>) -> Result<()> {
    if let Some(input) = arg {
        let text = f(input.trim())?;
        writeln!(std::io::stdout(), "{text}")?;
        return Ok(());
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failures = 0usize;
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        match f(line.trim()) {
            Ok(text) => writeln!(out, "{text}")?,
            Err(err) => {
                failures += 1;
                writeln!(
                    out,
                    "{}",
                    json!({ "error": format!("line {}: {err:#}", n + 1) })
                )?;
            }
        }
    }
    out.flush()?;
    if failures > 0 {
        bail!("{failures} input lines failed");
    }
    Ok(())
}

fn decode(table: &Dialect, hex_text: &str, show_pan: bool) -> Result<Value> {
    let wire = iso8583::text::parse_hex(hex_text)
        .ok_or_else(|| anyhow!("input is not an even number of hex digits"))?;
    let msg = table.decode(&wire)?;
    let mut fields = Map::new();
    for (field, value) in msg.fields() {
        let text = if show_pan {
            value_to_text(table, field, value)?
        } else {
            masked_text(table, field, value)?
        };
        fields.insert(field.to_string(), Value::String(text));
    }
    Ok(json!({ "mti": msg.mti().as_str(), "fields": fields }))
}

fn encode(table: &Dialect, json_text: &str) -> Result<String> {
    let doc: Value = serde_json::from_str(json_text).context("input is not JSON")?;
    let mti = doc
        .get("mti")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("\"mti\" (a string) is required"))?;
    let mut msg = Message::new(Mti::new(mti)?);
    if let Some(fields) = doc.get("fields") {
        let fields = fields
            .as_object()
            .ok_or_else(|| anyhow!("\"fields\" must be an object"))?;
        for (key, value) in fields {
            let field: u8 = key
                .parse()
                .ok()
                .filter(|n| (2..=128).contains(n))
                .ok_or_else(|| anyhow!("field key {key:?} is not a number in 2..=128"))?;
            let text = value
                .as_str()
                .ok_or_else(|| anyhow!("field {field}: value must be a string"))?;
            msg.set(field, value_from_text(table, field, text)?);
        }
    }
    Ok(iso8583::text::hex_upper(&table.encode(&msg)?))
}

fn print_fields(table: &Dialect, as_json: bool) -> Result<()> {
    use iso8583::spec::{Encoding, Length};
    let mut out = std::io::stdout().lock();
    if !as_json {
        writeln!(out, "| field | name | attribute | length | encoding |")?;
        writeln!(out, "|---|---|---|---|---|")?;
    }
    for (number, spec) in table
        .fields
        .iter()
        .enumerate()
        .filter_map(|(n, s)| s.as_ref().map(|s| (n, s)))
    {
        let (length, max, prefix_digits) = match spec.length {
            Length::Fixed(n) => ("fixed".to_string(), n, 0),
            Length::Var { digits, max } => (
                format!("{}VAR, {:?} prefix", "L".repeat(digits.into()), spec.prefix),
                max,
                digits,
            ),
        };
        let encoding = match spec.encoding {
            Encoding::Bcd { align, pad } => format!("BCD, {align:?}-aligned, pad {pad:X}"),
            other => format!("{other:?}"),
        };
        if as_json {
            let line = json!({
                "field": number, "name": spec.name, "content": spec.content.notation(),
                "attribute": spec.attribute(), "max": max, "prefix_digits": prefix_digits,
                "units": spec.units(), "encoding": encoding,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "| {number} | {} | {} | {length} | {encoding} |",
                spec.name,
                spec.attribute()
            )?;
        }
    }
    Ok(())
}
