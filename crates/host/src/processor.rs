//! From request bytes to response bytes: checks that need no storage (frame,
//! terminal identity, MAC under the request's DUKPT key, PIN block) run on
//! the connection's task; the decision runs in a group-commit job, so the
//! response leaves only after its journal row, transfer and outbox event
//! are durable.

use crate::flows::{self, CardInput, Job, Kind, RoutedCard};
use crate::issuer::IssuerKeys;
use crate::metrics::{Answer, Metrics};
use crate::routing::{Forwarded, Router};
use crate::time::Now;
use iso8583::dialect::CUP;
use iso8583::text::mask_pan;
use iso8583::{Field60, Message};
use ledger::{GroupCommit, SqliteStore};
use paycrypto::dukpt::aes::{Ksn, MacDirection, mac_key, pin_key, transaction_key_from_bdk};
use paycrypto::paycode::PaymentCode;
use paycrypto::pinblock::{Format, Pan, decipher};
use paycrypto::{Bdk, KeyAlgorithm};
use pki::MasterKey;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these message bytes (MTI onwards) back.
    Send(Vec<u8>),
    /// Close the connection without answering; the reason is logged.
    Close(String),
}

/// Turns requests into durable decisions and their responses.
pub struct Processor {
    ledger: Arc<GroupCommit<SqliteStore>>,
    bdk: Bdk,
    issuer: Arc<IssuerKeys>,
    master: Arc<MasterKey>,
    echo_interval: u32,
    metrics: Arc<Metrics>,
    router: Option<Arc<Router>>,
    reader: Option<std::sync::Mutex<rusqlite::Connection>>,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor").finish_non_exhaustive()
    }
}

/// A response with only the response code, for requests the host could not
/// take as far as a decision. Never MACed: the MAC could not be trusted.
fn bare(request: &Message, code: &str) -> Reply {
    let mut response = Message::new(request.mti().response().unwrap_or(request.mti()));
    for field in [3, 4, 11, 25, 41, 42, 49, 60] {
        if let Some(v) = request.get(field) {
            response.set(field, v);
        }
    }
    response.set(39, code);
    match CUP.encode(&response) {
        Ok(wire) => Reply::Send(wire),
        Err(e) => Reply::Close(format!("cannot encode a {code} response: {e}")),
    }
}

/// The PAN and expiry a request carries, from field 2/14 or track 2 (35).
fn card_data(msg: &Message) -> Option<(String, Option<String>)> {
    if let Some(pan) = msg.pan() {
        return Some((pan.to_string(), msg.get_str(14).map(str::to_string)));
    }
    let track = msg.get_str(35)?;
    let (pan, rest) = track.split_once('=')?;
    Some((pan.to_string(), rest.get(..4).map(str::to_string)))
}

/// Whether field 22 says the terminal scanned a payment code (PAN entry
/// mode 03, docs/iso8583-dialect.md).
fn scanned_code(msg: &Message) -> bool {
    msg.get_str(22).is_some_and(|mode| mode.starts_with("03"))
}

/// SHA-256 of what a request asks, without its KSN (62) and MAC (64): a
/// terminal retrying a reversal or advice under a fresh DUKPT key sends the
/// same content, and must get the first answer.
fn content_hash(request: &Message) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(request.mti().digits());
    for (field, value) in request.fields().filter(|(f, _)| *f != 62 && *f != 64) {
        hash.update([field]);
        hash.update((value.len() as u32).to_be_bytes());
        hash.update(value);
    }
    hash.finalize().into()
}

impl Processor {
    /// A processor over `ledger`, deriving terminal keys from `bdk`,
    /// opening wallet secrets with `master`, recording into `metrics`.
    pub fn new(
        ledger: Arc<GroupCommit<SqliteStore>>,
        bdk: Bdk,
        issuer: Arc<IssuerKeys>,
        master: Arc<MasterKey>,
        echo_interval: u32,
        metrics: Arc<Metrics>,
    ) -> Self {
        Processor {
            ledger,
            bdk,
            issuer,
            master,
            echo_interval,
            metrics,
            router: None,
            reader: None,
        }
    }

    /// Serves the card ranges of `router` upstream; `reader` (read-only, the
    /// host database) tells retransmissions and stale keys apart before
    /// anything is forwarded.
    pub fn with_router(mut self, router: Arc<Router>, reader: rusqlite::Connection) -> Self {
        self.router = Some(router);
        self.reader = Some(std::sync::Mutex::new(reader));
        self
    }

    /// Forwards a routed sale upstream, or voids the upstream sale a
    /// reversal names. `Err` is the answer when the upstream void could not
    /// be done (the terminal retries its reversal).
    async fn forward(&self, job: &mut Job) -> Result<Option<Forwarded>, Reply> {
        let (Some(router), Some(reader)) = (&self.router, &self.reader) else {
            return Ok(None);
        };
        let Some(mut card) = job.routed.take() else {
            return Ok(None);
        };
        let lookup = {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            let original = Kind::reversed(&job.request).map(|(mti, _)| {
                flows::routed_original(&conn, &job.terminal_id, mti, job.stan, job.batch)
            });
            (
                flows::journaled(&conn, job),
                flows::ksn_fresh(&conn, job),
                original,
            )
        };
        let (Ok(journaled), Ok(fresh)) = (lookup.0, lookup.1) else {
            tracing::error!(terminal = %job.terminal_id, "routing lookup failed; deciding locally");
            return Ok(None);
        };
        // Retransmissions get their stored answer and stale keys their A0 from the job.
        if journaled || !fresh {
            return Ok(None);
        }
        match job.kind {
            Kind::Sale => Ok(Some(
                router
                    .sale(
                        &card.prefix,
                        &card.pan,
                        &card.expiry,
                        job.amount,
                        card.pin.take(),
                    )
                    .await,
            )),
            Kind::Reversal => {
                let Some(Ok(Some((route, batch, stan)))) = lookup.2 else {
                    return Ok(None);
                };
                let voided = router
                    .void(&route, &card.pan, &card.expiry, job.amount, (batch, stan))
                    .await;
                if matches!(voided.code.as_str(), "00" | "25" | "12") {
                    Ok(None)
                } else {
                    Err(bare(&job.request, "96"))
                }
            }
            _ => Ok(None),
        }
    }

    /// The metrics this processor records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Processes one request from the terminal `peer` authenticated at the
    /// handshake, and records its kind, answer and latency.
    pub async fn process(&self, peer: &str, wire: &[u8]) -> Reply {
        let started = Instant::now();
        let (kind, reply) = match self.prepare(peer, wire, Now::system()) {
            Ok(job) => (Some(job.kind), self.decide(peer, wire, job).await),
            // Refused before a decision (rare): decode again only to label it.
            Err(reply) => (
                CUP.decode(wire).ok().as_ref().and_then(Kind::classify),
                reply,
            ),
        };
        let answer = match &reply {
            // One more decode of a short message, next to a commit's fsync.
            Reply::Send(wire) => CUP
                .decode(wire)
                .ok()
                .and_then(|m| m.response_code().map(Answer::code))
                .unwrap_or(Answer::code("")),
            Reply::Close(_) => Answer::Closed,
        };
        self.metrics.request(
            kind.map_or("unknown", Kind::name),
            answer,
            started.elapsed(),
        );
        reply
    }

    /// Runs the job in a group commit and returns its response.
    async fn decide(&self, peer: &str, wire: &[u8], mut job: Job) -> Reply {
        let kind = job.kind;
        let forwarded = match self.forward(&mut job).await {
            Ok(forwarded) => forwarded,
            Err(reply) => return reply,
        };
        match self
            .ledger
            .submit(move |tx| flows::run_with(tx, &job, forwarded.as_ref()))
            .await
        {
            Ok(response) => Reply::Send(response),
            Err(e) => {
                tracing::error!(
                    terminal = peer,
                    kind = kind.name(),
                    "request failed in storage: {e}"
                );
                // The request decoded before; answer 96 without a MAC so the
                // terminal treats the outcome as unknown and reverses.
                match CUP.decode(wire) {
                    Ok(request) => bare(&request, "96"),
                    Err(e) => Reply::Close(e.to_string()),
                }
            }
        }
    }

    /// Every check that needs no storage, then the job to run.
    pub fn prepare(&self, peer: &str, wire: &[u8], now: Now) -> Result<Job, Reply> {
        let (request, mac_scope) = match CUP.decode_with_mac_scope(wire) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::warn!(terminal = peer, "malformed request: {e}");
                // Answer 30 when at least the MTI can be read.
                let mti = wire.get(..2).and_then(|b| {
                    let digits = [b[0] >> 4, b[0] & 15, b[1] >> 4, b[1] & 15].map(|d| b'0' + d);
                    iso8583::Mti::from_digits(digits)
                        .filter(|_| b.iter().all(|x| x >> 4 < 10 && x & 15 < 10))
                });
                return Err(match mti.filter(|m| m.is_request()) {
                    Some(mti) => bare(&Message::new(mti), "30"),
                    None => Reply::Close(format!("unreadable request: {e}")),
                });
            }
        };
        if request.terminal_id() != Some(peer) {
            return Err(Reply::Close(format!(
                "field 41 {:?} differs from the certificate's terminal id {peer:?}",
                request.terminal_id().unwrap_or("")
            )));
        }
        let Some(kind) = Kind::classify(&request) else {
            tracing::warn!(terminal = peer, mti = %request.mti(), "request outside the message set");
            return Err(bare(&request, "12"));
        };
        let format_error = |what: &str| {
            tracing::warn!(terminal = peer, kind = kind.name(), "format error: {what}");
            bare(&request, "30")
        };
        let stan = match request.stan() {
            Some(Ok(stan)) => stan,
            _ => return Err(format_error("field 11 missing or not numeric")),
        };
        let batch = match request.get_str(60).map(Field60::parse) {
            Some(Ok(f60)) => f60.batch,
            _ => return Err(format_error("field 60 missing or malformed")),
        };
        let amount = match request.amount() {
            None => 0,
            Some(Ok(amount)) => amount,
            Some(Err(_)) => return Err(format_error("field 4 not numeric")),
        };
        let currency = match request.currency().map(str::parse::<u16>) {
            None if !kind.needs_mac() || kind == Kind::Settlement || kind.is_batch() => 0,
            Some(Ok(c)) => c,
            _ => return Err(format_error("field 49 missing or not numeric")),
        };

        let mut ksn_fields = None;
        let mut response_mac = None;
        let mut pin_key_for_block = None;
        if kind.needs_mac() {
            let (Some(scope), Some(mac), Some(ksn)) = (mac_scope, request.get(64), request.get(62))
            else {
                tracing::warn!(
                    terminal = peer,
                    kind = kind.name(),
                    "request without MAC or KSN"
                );
                return Err(bare(&request, "A0"));
            };
            let Ok(ksn) = Ksn::from_bytes(ksn) else {
                return Err(format_error("field 62 is not a 12-byte AES DUKPT KSN"));
            };
            let keys = transaction_key_from_bdk(&self.bdk, &ksn).and_then(|tk| {
                Ok((
                    mac_key(&tk, &ksn, MacDirection::Generate, KeyAlgorithm::Aes128)?,
                    mac_key(&tk, &ksn, MacDirection::Verify, KeyAlgorithm::Aes128)?,
                    pin_key(&tk, &ksn, KeyAlgorithm::Aes128)?,
                ))
            });
            let Ok((generate, verify, pin)) = keys else {
                return Err(format_error("KSN counter unusable"));
            };
            if paycrypto::mac::verify(&generate, paycrypto::mac::Algorithm::Cmac, scope, mac)
                .is_err()
            {
                tracing::warn!(
                    terminal = peer,
                    kind = kind.name(),
                    stan,
                    "MAC verification failed"
                );
                return Err(bare(&request, "A0"));
            }
            ksn_fields = Some((hex::encode(ksn.initial_key_id()), ksn.counter()));
            response_mac = Some(verify);
            pin_key_for_block = Some(pin);
        }

        let mut card = None;
        let mut pin_check = None;
        let mut routed = None;
        if let Some(field2) = request.pan().filter(|_| scanned_code(&request)) {
            // A wallet's payment code: no expiry, track, PIN or upstream route.
            let code = PaymentCode::parse(field2);
            let token = match &code {
                Ok(code) => self.issuer.wallet_token(code.wallet()),
                Err(_) => self.issuer.token(field2),
            };
            card = Some(CardInput {
                token,
                masked_pan: mask_pan(field2),
                expiry: None,
                code: Some(code),
            });
        } else if let Some((pan, expiry)) = card_data(&request) {
            let token = self.issuer.token(&pan);
            let route = self
                .router
                .as_ref()
                .and_then(|r| r.route_for(&pan))
                .filter(|_| matches!(kind, Kind::Sale | Kind::Reversal));
            let mut upstream_pin = None;
            if let (Some(block), Some(key)) = (request.get(52), &pin_key_for_block) {
                let pin = Pan::new(&pan).and_then(|p| decipher(key, Format::Iso4, block, Some(&p)));
                match pin {
                    Ok(pin) => {
                        pin_check = Some(self.issuer.pin_check(&token, &pin.expose_secret()));
                        // Translated: enciphered again under the upstream link's key.
                        upstream_pin = route.map(|_| pin);
                    }
                    // An unreadable PIN block is a wrong PIN, not a format error.
                    Err(e) => tracing::info!(terminal = peer, stan, "PIN block rejected: {e}"),
                }
            }
            routed = route.map(|prefix| RoutedCard {
                prefix: prefix.to_string(),
                pan: pan.clone(),
                expiry: expiry.clone().unwrap_or_default(),
                pin: upstream_pin,
            });
            card = Some(CardInput {
                token,
                masked_pan: mask_pan(&pan),
                expiry,
                code: None,
            });
        }
        Ok(Job {
            kind,
            routed,
            request_hash: content_hash(&request),
            request,
            terminal_id: peer.to_string(),
            stan,
            batch,
            amount,
            currency,
            card,
            pin_check,
            ksn: ksn_fields,
            now,
            response_mac,
            echo_interval: self.echo_interval,
            master: self.master.clone(),
        })
    }
}
