//! `posnet crypto`: a payment-cryptography calculator for engineers (DUKPT,
//! PIN blocks, MACs, TR-31, key check values, nexo message security). Every
//! command prints one JSON object; `batch` runs many operations read as JSON
//! lines. This is a calculator: it prints the keys and PINs it is asked for.

use std::io::{BufRead, Read, Write};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use paycrypto::dukpt::{aes, tdes};
use paycrypto::keys::{key_check_value, key_check_value_aes_ecb};
use paycrypto::mac::{self, Algorithm, Padding};
use paycrypto::nexo::{self, NexoKey};
use paycrypto::pinblock::{self, Format, Pan, Pin};
use paycrypto::tr31::{self, Header, Version};
use paycrypto::{Bdk, Kbpk, KeyAlgorithm, MacKey, PinKey};
use serde::Deserialize;
use serde_json::{Value, json};

/// Arguments of `posnet crypto`.
#[derive(Args)]
pub struct CryptoArgs {
    #[command(subcommand)]
    command: CryptoCommand,
}

#[derive(Subcommand)]
enum CryptoCommand {
    /// Derive DUKPT transaction and working keys from a BDK and a KSN
    /// (AES DUKPT for a 12-byte KSN, TDES DUKPT for a 10-byte KSN).
    Dukpt(DukptParams),
    /// Encode or decode ISO 9564 PIN blocks.
    #[command(subcommand)]
    Pinblock(PinblockCommand),
    /// Compute a MAC.
    Mac(MacParams),
    /// Wrap or unwrap TR-31 key blocks.
    #[command(subcommand)]
    Tr31(Tr31Command),
    /// Key check value of a key.
    Kcv(KcvParams),
    /// nexo message security: secure or open a Sale-to-POI message on stdin.
    #[command(subcommand)]
    Nexo(NexoCommand),
    /// Run operations read as JSON lines on stdin, one JSON result per line.
    Batch,
}

#[derive(Subcommand)]
enum PinblockCommand {
    /// Build a PIN block (clear, or enciphered when --key is given).
    Encode(PinEncodeParams),
    /// Read the PIN from a PIN block (deciphered first when --key is given).
    Decode(PinDecodeParams),
}

#[derive(Subcommand)]
enum Tr31Command {
    /// Wrap a key under a KBPK.
    Wrap(Tr31WrapParams),
    /// Unwrap a key block under a KBPK.
    Unwrap(Tr31UnwrapParams),
}

#[derive(Args, Deserialize)]
struct DukptParams {
    /// Base derivation key, hex (AES-128/192/256 or 2-key TDES).
    #[arg(long)]
    bdk: String,
    /// Key serial number, hex (12 bytes AES, 10 bytes TDES).
    #[arg(long)]
    ksn: String,
}

#[derive(Args, Deserialize)]
struct PinEncodeParams {
    /// ISO 9564 format: 0, 1, 3 or 4.
    #[arg(long)]
    format: u8,
    /// The PIN, 4 to 12 digits.
    #[arg(long)]
    pin: String,
    /// The PAN (formats 0, 3, 4).
    #[arg(long)]
    pan: Option<String>,
    /// PIN key, hex: TDES for formats 0, 1, 3; AES for format 4 (required).
    #[arg(long)]
    key: Option<String>,
}

#[derive(Args, Deserialize)]
struct PinDecodeParams {
    /// ISO 9564 format: 0, 1, 3 or 4.
    #[arg(long)]
    format: u8,
    /// The PIN block, hex (clear, or enciphered with --key).
    #[arg(long)]
    block: String,
    /// The PAN (formats 0, 3, 4).
    #[arg(long)]
    pan: Option<String>,
    /// PIN key, hex, to decipher the block first.
    #[arg(long)]
    key: Option<String>,
}

#[derive(Args, Deserialize)]
struct MacParams {
    /// x919 (ISO 9797-1 alg. 3, retail MAC), alg1 (ISO 9797-1 alg. 1),
    /// cmac (AES-CMAC) or cup (UnionPay POS ECB MAC).
    #[arg(long)]
    alg: String,
    /// MAC key, hex.
    #[arg(long)]
    key: String,
    /// Message, hex.
    #[arg(long)]
    data: String,
    /// ISO 9797-1 padding method for x919 and alg1: 1 (zeros) or 2 (80 00..).
    #[arg(long, default_value_t = 1)]
    #[serde(default = "padding_default")]
    padding: u8,
}

fn padding_default() -> u8 {
    1
}

#[derive(Args, Deserialize)]
struct Tr31WrapParams {
    /// Key block protection key, hex (TDES for version B, AES for D).
    #[arg(long)]
    kbpk: String,
    /// Header template, e.g. D0000P0AE00E0000 (length and block count are
    /// filled in; optional blocks may follow).
    #[arg(long)]
    header: String,
    /// The key to wrap, hex.
    #[arg(long)]
    key: String,
}

#[derive(Args, Deserialize)]
struct Tr31UnwrapParams {
    /// Key block protection key, hex.
    #[arg(long)]
    kbpk: String,
    /// The key block.
    #[arg(long)]
    block: String,
}

#[derive(Args, Deserialize)]
struct KcvParams {
    /// The key, hex.
    #[arg(long)]
    key: String,
    /// des, tdes or aes; by default every family the key length allows.
    #[arg(long)]
    alg: Option<String>,
}

#[derive(Subcommand)]
enum NexoCommand {
    /// Plaintext SaleToPOIRequest/Response JSON on stdin → secured envelope.
    Encrypt(NexoKeyArgs),
    /// Secured envelope on stdin → verified plaintext JSON.
    Decrypt(NexoKeyArgs),
}

#[derive(Args)]
struct NexoKeyArgs {
    /// The shared passphrase (better from the environment, so that it stays
    /// out of shell history).
    #[arg(long, env = "POSNET_NEXO_PASSPHRASE", hide_env_values = true)]
    passphrase: String,
    /// Key identifier carried in the SecurityTrailer.
    #[arg(long)]
    key_id: String,
    /// Key version carried in the SecurityTrailer.
    #[arg(long)]
    key_version: u64,
}

/// One operation of `posnet crypto batch`.
#[derive(Deserialize)]
#[serde(tag = "op")]
enum BatchOp {
    #[serde(rename = "dukpt")]
    Dukpt(DukptParams),
    #[serde(rename = "pinblock.encode")]
    PinEncode(PinEncodeParams),
    #[serde(rename = "pinblock.decode")]
    PinDecode(PinDecodeParams),
    #[serde(rename = "mac")]
    Mac(MacParams),
    #[serde(rename = "tr31.wrap")]
    Tr31Wrap(Tr31WrapParams),
    #[serde(rename = "tr31.unwrap")]
    Tr31Unwrap(Tr31UnwrapParams),
    #[serde(rename = "kcv")]
    Kcv(KcvParams),
}

/// Longest batch line accepted, in bytes.
const MAX_BATCH_LINE: usize = 64 * 1024;
/// Largest nexo message read from stdin (the library's own limit).
const MAX_NEXO_INPUT: usize = nexo::MAX_MESSAGE_LEN;

/// Runs `posnet crypto`.
pub fn run(args: CryptoArgs) -> Result<()> {
    let out = match args.command {
        CryptoCommand::Dukpt(p) => dukpt(&p)?,
        CryptoCommand::Pinblock(PinblockCommand::Encode(p)) => pin_encode(&p)?,
        CryptoCommand::Pinblock(PinblockCommand::Decode(p)) => pin_decode(&p)?,
        CryptoCommand::Mac(p) => mac_op(&p)?,
        CryptoCommand::Tr31(Tr31Command::Wrap(p)) => tr31_wrap(&p)?,
        CryptoCommand::Tr31(Tr31Command::Unwrap(p)) => tr31_unwrap(&p)?,
        CryptoCommand::Kcv(p) => kcv(&p)?,
        CryptoCommand::Nexo(n) => return nexo_op(&n),
        CryptoCommand::Batch => return batch(),
    };
    println!("{out}");
    Ok(())
}

fn unhex(what: &str, text: &str) -> Result<Vec<u8>> {
    hex::decode(text.trim()).map_err(|e| anyhow!("{what} is not hex: {e}"))
}

fn hx(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

fn dukpt(p: &DukptParams) -> Result<Value> {
    let bdk = unhex("--bdk", &p.bdk)?;
    let ksn = unhex("--ksn", &p.ksn)?;
    match ksn.len() {
        aes::KSN_LEN => {
            let bdk = Bdk::new(KeyAlgorithm::aes_for_len(bdk.len())?, &bdk)?;
            let ksn = aes::Ksn::from_bytes(&ksn)?;
            let ik = aes::initial_key(&bdk, ksn.initial_key_id())?;
            let tk = aes::transaction_key(&ik, &ksn)?;
            let a = tk.algorithm();
            let mac = |d| aes::mac_key(&tk, &ksn, d, a).map(|k| hx(k.expose_secret()));
            let data = |d| aes::data_key(&tk, &ksn, d, a).map(|k| hx(k.expose_secret()));
            Ok(json!({
                "scheme": "AES DUKPT (X9.24-3-2017)",
                "ksn_counter": ksn.counter(),
                "initial_key": hx(ik.expose_secret()),
                "transaction_key": hx(tk.expose_secret()),
                "pin_key": hx(aes::pin_key(&tk, &ksn, a)?.expose_secret()),
                "mac_key": mac(aes::MacDirection::Generate)?,
                "mac_verification_key": mac(aes::MacDirection::Verify)?,
                "data_key": data(aes::DataDirection::Encrypt)?,
                "data_decryption_key": data(aes::DataDirection::Decrypt)?,
            }))
        }
        tdes::KSN_LEN => {
            let bdk = Bdk::new(KeyAlgorithm::Tdes2, &bdk)?;
            let ksn = tdes::Ksn::from_bytes(&ksn)?;
            let ipek = tdes::ipek(&bdk, &ksn)?;
            let tk = tdes::transaction_key(&ipek, &ksn)?;
            let mac = |d| tdes::mac_key(&tk, d).map(|k| hx(k.expose_secret()));
            let data = |d| tdes::data_key(&tk, d).map(|k| hx(k.expose_secret()));
            Ok(json!({
                "scheme": "TDES DUKPT (X9.24-1-2009)",
                "ksn_counter": ksn.counter(),
                "initial_key": hx(ipek.expose_secret()),
                "transaction_key": hx(tk.expose_secret()),
                "pin_key": hx(tdes::pin_key(&tk)?.expose_secret()),
                "mac_key": mac(tdes::Direction::Request)?,
                "mac_response_key": mac(tdes::Direction::Response)?,
                "data_key": data(tdes::Direction::Request)?,
                "data_response_key": data(tdes::Direction::Response)?,
            }))
        }
        n => bail!("--ksn is {n} bytes: 12 for AES DUKPT, 10 for TDES DUKPT"),
    }
}

fn pin_key(format: Format, key: &str) -> Result<PinKey> {
    let raw = unhex("--key", key)?;
    let alg = if format == Format::Iso4 {
        KeyAlgorithm::aes_for_len(raw.len())?
    } else {
        KeyAlgorithm::des_for_len(raw.len())?
    };
    Ok(PinKey::new(alg, &raw)?)
}

fn pan(pan: Option<&String>) -> Result<Option<Pan>> {
    pan.map(|p| Pan::new(p)).transpose().map_err(Into::into)
}

fn pin_encode(p: &PinEncodeParams) -> Result<Value> {
    let format = Format::from_number(p.format)?;
    let pin = Pin::new(&p.pin)?;
    let pan = pan(p.pan.as_ref())?;
    let clear = pinblock::encode(format, &pin, pan.as_ref())?;
    match &p.key {
        Some(key) => {
            let block = pinblock::encipher(&pin_key(format, key)?, format, &clear, pan.as_ref())?;
            Ok(json!({ "format": p.format, "block": hx(&block) }))
        }
        None if format == Format::Iso4 => {
            bail!("ISO format 4 is enciphered: --key (AES) is required")
        }
        None => Ok(json!({ "format": p.format, "clear_block": hx(clear.expose_secret()) })),
    }
}

fn pin_decode(p: &PinDecodeParams) -> Result<Value> {
    let format = Format::from_number(p.format)?;
    let block = unhex("--block", &p.block)?;
    let pan = pan(p.pan.as_ref())?;
    let pin = match &p.key {
        Some(key) => pinblock::decipher(&pin_key(format, key)?, format, &block, pan.as_ref())?,
        None => pinblock::decode(format, &block, pan.as_ref())?,
    };
    Ok(json!({ "format": p.format, "pin": pin.expose_secret() }))
}

fn mac_op(p: &MacParams) -> Result<Value> {
    let raw = unhex("--key", &p.key)?;
    let data = unhex("--data", &p.data)?;
    let padding = match p.padding {
        1 => Padding::Method1,
        2 => Padding::Method2,
        n => bail!("--padding {n}: ISO 9797-1 padding method 1 or 2"),
    };
    let (alg, key_alg) = match p.alg.as_str() {
        "x919" | "alg3" => (Algorithm::RetailMac(padding), KeyAlgorithm::Tdes2),
        "alg1" | "x99" => (
            Algorithm::Iso9797Alg1(padding),
            KeyAlgorithm::des_for_len(raw.len())?,
        ),
        "cmac" => (Algorithm::Cmac, KeyAlgorithm::aes_for_len(raw.len())?),
        "cup" => (Algorithm::CupEcb, KeyAlgorithm::des_for_len(raw.len())?),
        other => bail!("--alg {other}: one of x919, alg1, cmac, cup"),
    };
    let key = MacKey::new(key_alg, &raw)?;
    let tag = mac::generate(&key, alg, &data)?;
    let mut out = json!({ "alg": p.alg, "mac": hx(&tag) });
    if alg == Algorithm::CupEcb {
        // The CUP MAC is 8 ASCII hex characters; show them as text too.
        out["mac_ascii"] = Value::String(String::from_utf8_lossy(&tag).into_owned());
    }
    Ok(out)
}

fn kbpk_for(version: Version, raw: &[u8]) -> Result<Kbpk> {
    let alg = match version {
        Version::D => KeyAlgorithm::aes_for_len(raw.len())?,
        Version::A | Version::B => KeyAlgorithm::des_for_len(raw.len())?,
    };
    Ok(Kbpk::new(alg, raw)?)
}

fn tr31_wrap(p: &Tr31WrapParams) -> Result<Value> {
    let (header, used) = Header::parse(p.header.trim())?;
    if used != p.header.trim().len() {
        bail!(
            "--header has {} characters after its optional blocks",
            p.header.trim().len() - used
        );
    }
    let kbpk = kbpk_for(header.version, &unhex("--kbpk", &p.kbpk)?)?;
    let key = unhex("--key", &p.key)?;
    Ok(json!({ "block": tr31::wrap(&kbpk, &header, &key)? }))
}

fn tr31_unwrap(p: &Tr31UnwrapParams) -> Result<Value> {
    let block = p.block.trim();
    let version = match block.chars().next() {
        Some('A') => Version::A,
        Some('B') => Version::B,
        Some('D') => Version::D,
        other => bail!("key block version {other:?} is not supported (A, B, D are)"),
    };
    let kbpk = kbpk_for(version, &unhex("--kbpk", &p.kbpk)?)?;
    let kb = tr31::unwrap(&kbpk, block)?;
    let h = &kb.header;
    let blocks: serde_json::Map<String, Value> = h
        .optional_blocks
        .iter()
        .map(|b| (b.id.clone(), Value::String(b.data.clone())))
        .collect();
    Ok(json!({
        "version": h.version.as_char().to_string(),
        "key_usage": h.key_usage,
        "algorithm": h.algorithm.to_string(),
        "mode_of_use": h.mode_of_use.to_string(),
        "key_version": h.key_version,
        "exportability": h.exportability.to_string(),
        "optional_blocks": blocks,
        "key": hx(kb.expose_secret()),
        "kcv": hx(&key_check_value(kb.algorithm(), kb.expose_secret())),
    }))
}

fn kcv(p: &KcvParams) -> Result<Value> {
    let raw = unhex("--key", &p.key)?;
    let mut out = serde_json::Map::new();
    let (des, aes) = match p.alg.as_deref() {
        None => (
            KeyAlgorithm::des_for_len(raw.len()).ok(),
            KeyAlgorithm::aes_for_len(raw.len()).ok(),
        ),
        Some("des" | "tdes") => (Some(KeyAlgorithm::des_for_len(raw.len())?), None),
        Some("aes") => (None, Some(KeyAlgorithm::aes_for_len(raw.len())?)),
        Some(other) => bail!("--alg {other}: des, tdes or aes"),
    };
    if des.is_none() && aes.is_none() {
        bail!(
            "a {}-byte key is neither DES/TDES (8, 16, 24) nor AES (16, 24, 32)",
            raw.len()
        );
    }
    if let Some(a) = des {
        out.insert("tdes".into(), hx(&key_check_value(a, &raw)).into());
    }
    if let Some(a) = aes {
        out.insert("aes_cmac".into(), hx(&key_check_value(a, &raw)).into());
        out.insert(
            "aes_ecb".into(),
            hx(&key_check_value_aes_ecb(a, &raw)?).into(),
        );
    }
    Ok(Value::Object(out))
}

fn nexo_op(command: &NexoCommand) -> Result<()> {
    let (NexoCommand::Encrypt(k) | NexoCommand::Decrypt(k)) = command;
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_NEXO_INPUT as u64 + 1)
        .read_to_end(&mut input)
        .context("reading stdin")?;
    let key = NexoKey::derive(&k.passphrase, &k.key_id, k.key_version)?;
    let out = match command {
        NexoCommand::Encrypt(_) => nexo::encrypt(&key, trim_newline(&input))?,
        NexoCommand::Decrypt(_) => nexo::decrypt(&key, trim_newline(&input))?,
    };
    println!("{out}");
    Ok(())
}

fn trim_newline(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &b[..end]
}

fn run_op(line: &[u8]) -> Result<Value> {
    let op: BatchOp = serde_json::from_slice(line).context("not a batch operation")?;
    match op {
        BatchOp::Dukpt(p) => dukpt(&p),
        BatchOp::PinEncode(p) => pin_encode(&p),
        BatchOp::PinDecode(p) => pin_decode(&p),
        BatchOp::Mac(p) => mac_op(&p),
        BatchOp::Tr31Wrap(p) => tr31_wrap(&p),
        BatchOp::Tr31Unwrap(p) => tr31_unwrap(&p),
        BatchOp::Kcv(p) => kcv(&p),
    }
}

/// Reads JSON lines, answers each with `{"ok": {...}}` or `{"error": "..."}`
/// on its own line, in order. Lines longer than [`MAX_BATCH_LINE`] are
/// answered with an error and skipped.
fn batch() -> Result<()> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut input)
            .take(MAX_BATCH_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let result = if line.len() > MAX_BATCH_LINE && line.last() != Some(&b'\n') {
            // Discard the rest of the over-long line, in bounded chunks.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let k = (&mut input)
                    .take(MAX_BATCH_LINE as u64)
                    .read_until(b'\n', &mut rest)?;
                if k == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
            json!({ "error": format!("line longer than {MAX_BATCH_LINE} bytes") })
        } else {
            let text = trim_newline(&line);
            if text.is_empty() {
                continue;
            }
            match run_op(text) {
                Ok(v) => json!({ "ok": v }),
                Err(e) => json!({ "error": format!("{e:#}") }),
            }
        };
        writeln!(out, "{result}")?;
    }
    out.flush()?;
    Ok(())
}
