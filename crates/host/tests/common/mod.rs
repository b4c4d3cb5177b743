//! A host on loopback with a merchant, test cards and an enrolled terminal,
//! and a test terminal that speaks to it over mutual TLS, building its
//! requests with the load generator's simulated terminal.
#![allow(dead_code, missing_docs)]

use futures_util::{SinkExt, StreamExt};
use host::admin::{self, CardSpec, MerchantSpec, TerminalSpec};
use host::runtime::{HostData, RunningHost, ServeOptions, start};
use host::server::Limits;
use iso8583::frame::{FrameCodec, OwnedFrame};
use iso8583::{FrameLayout, Message, Mti, Tpdu};
use ledger::LedgerRead;
use loadgen::{Card, Sealed, SimTerminal};
use pki::{EnrollmentBundle, MasterKey};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

pub const MERCHANT: &str = "M00000000000001";
pub const TERMINAL: &str = "T0000001";
pub const CNY: u16 = 156;

/// Test cards: (PAN, PIN, balance, status, expiry).
pub const APPROVED: &str = "6200000000000005"; // PIN 1234, 1,000.00
pub const NO_PIN: &str = "6200000000000013"; // no PIN, 50.00
pub const EXPIRED: &str = "6200000000000021";
pub const BLOCKED: &str = "6200000000000039";
pub const UNKNOWN: &str = "6200000000000047";

pub fn card(pan: &str, pin: Option<&str>, balance: u64, status: &str, expiry: &str) -> CardSpec {
    CardSpec {
        pan: pan.into(),
        expiry: expiry.into(),
        pin: pin.map(Into::into),
        kind: "card".into(),
        balance,
        per_txn_limit: 50_000,
        daily_limit: 80_000,
        currency: CNY,
        status: status.into(),
        holder: String::new(),
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub data: HostData,
    pub host: Option<RunningHost>,
    pub bundle: EnrollmentBundle,
}

impl Harness {
    pub async fn start() -> Harness {
        let (dir, data) = testbed::host_data();
        let merchant = MerchantSpec {
            fee_bps: 0,
            merchant_id: MERCHANT.into(),
            name: "Corner Shop".into(),
            currency: CNY,
            max_amount: 1_000_000,
            webhook_url: None,
            webhook_secret: None,
            api_key: None,
        };
        let cards = vec![
            card(APPROVED, Some("1234"), 100_000, "active", "3012"),
            card(NO_PIN, None, 5_000, "active", "3012"),
            card(EXPIRED, None, 5_000, "active", "2001"),
            card(BLOCKED, None, 5_000, "blocked", "3012"),
        ];
        let prepared = admin::prepare_enrollment(
            &data.deployment,
            TerminalSpec {
                terminal_id: TERMINAL.into(),
                merchant_id: MERCHANT.into(),
                max_amount: 60_000,
                offline_floor: 2_000,
                hosts: vec![],
            },
        )
        .unwrap();
        let issuer = data.issuer.clone();
        let master_key = MasterKey::from_hex(&hex::encode([0u8; 32])).unwrap();
        let bundle = data
            .ledger
            .submit(move |tx| -> Result<EnrollmentBundle, admin::AdminError> {
                admin::add_merchant(tx, &merchant, &master_key, 0)?;
                for c in &cards {
                    admin::add_card(tx, c, &issuer, &master_key, 0)?;
                }
                admin::enroll(tx, prepared, 0)
            })
            .await
            .unwrap();
        let mut h = Harness {
            dir,
            data,
            host: None,
            bundle,
        };
        h.serve().await;
        h
    }

    pub async fn serve(&mut self) {
        self.host = Some(start(&self.data, &testbed::serve_options()).await.unwrap());
    }

    pub fn addr(&self) -> SocketAddr {
        self.host.as_ref().unwrap().addr
    }

    pub async fn terminal(&self) -> TestTerminal {
        self.terminal_result().await.unwrap()
    }

    pub async fn terminal_result(&self) -> std::io::Result<TestTerminal> {
        TestTerminal::connect(
            self.addr(),
            &self.bundle,
            self.data.deployment.ktk().expose(),
        )
        .await
    }

    /// Total debits equal total credits and every balance equals its transfers.
    pub fn assert_ledger_consistent(&self) {
        let mut reader =
            ledger::SqliteReader::open(self.dir.path().join("host").join(host::runtime::DB_FILE))
                .unwrap();
        let report = reader.check_invariants().unwrap();
        assert!(report.is_consistent(), "ledger invariants: {report:?}");
    }

    pub fn journal_count(&self) -> i64 {
        let conn = self.data.reader().unwrap();
        conn.query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
            .unwrap()
    }
}

/// A test terminal: a raw framed TLS stream (to send anything, malformed
/// included) and the load generator's simulated terminal for its requests,
/// keys and MACs.
pub struct TestTerminal {
    pub framed: Framed<tokio_rustls::client::TlsStream<TcpStream>, FrameCodec>,
    pub sim: SimTerminal,
}

pub type Sent = Sealed;

impl std::ops::Deref for TestTerminal {
    type Target = SimTerminal;
    fn deref(&self) -> &SimTerminal {
        &self.sim
    }
}

impl std::ops::DerefMut for TestTerminal {
    fn deref_mut(&mut self) -> &mut SimTerminal {
        &mut self.sim
    }
}

impl TestTerminal {
    pub async fn connect(
        addr: SocketAddr,
        bundle: &EnrollmentBundle,
        ktk: &[u8],
    ) -> std::io::Result<Self> {
        let config = loadgen::tls_config(bundle).unwrap();
        let tcp = TcpStream::connect(addr).await?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        Ok(TestTerminal {
            framed: Framed::new(tls, FrameCodec::new(FrameLayout::CUP)),
            sim: SimTerminal::from_bundle(bundle, ktk).unwrap(),
        })
    }

    /// A request of `mti` with 11, 41, 42, 60 filled in and `fields` added.
    pub fn request(
        &mut self,
        mti: &str,
        txn_type: u8,
        network_code: Option<u16>,
        fields: &[(u8, &str)],
    ) -> Message {
        self.sim
            .request(Mti::new(mti).unwrap(), txn_type, network_code, fields)
    }

    /// A sale; a PIN rides in field 52 in clear until [`TestTerminal::seal`]
    /// enciphers it.
    pub fn sale(&mut self, pan: &str, amount: u64, pin: Option<&str>) -> Message {
        let card = Card {
            pan: pan.into(),
            expiry: None,
            pin: None,
        };
        let mut m = self.sim.sale(&card, amount, CNY).unwrap();
        if let Some(pin) = pin {
            m.set(52, pin.as_bytes());
            m.set(26, "12");
        }
        m
    }

    /// Adds KSN and MAC (and enciphers a clear PIN in field 52) then encodes.
    pub fn seal(&mut self, mut m: Message) -> Sent {
        let pin = m.get_str(52).map(str::to_string);
        if pin.is_some() {
            m.remove(52);
        }
        self.sim.seal(m, pin.as_deref()).unwrap()
    }

    pub async fn send_wire(&mut self, wire: &[u8]) -> Option<Vec<u8>> {
        let frame = OwnedFrame {
            tpdu: Some(Tpdu {
                id: 0x60,
                destination: 1,
                source: 0,
            }),
            header: vec![0x60, 0x31, 0, 0x31, 0, 0].into(),
            message: wire.to_vec().into(),
        };
        self.framed.send(frame).await.ok()?;
        let reply = tokio::time::timeout(Duration::from_secs(10), self.framed.next())
            .await
            .ok()??
            .ok()?;
        assert_eq!(
            reply.tpdu,
            Some(Tpdu {
                id: 0x60,
                destination: 0,
                source: 1
            }),
            "TPDU addresses swapped on the reply"
        );
        Some(reply.message.to_vec())
    }

    /// Sends a sealed request; checks the response MAC when one is expected.
    pub async fn exchange(&mut self, sent: &Sent) -> Message {
        let wire = self.send_wire(&sent.wire).await.expect("a response");
        loadgen::open_response(&wire, sent.response_key.as_ref()).expect("response MAC verifies")
    }

    pub async fn send(&mut self, m: Message) -> Message {
        let sent = self.seal(m);
        self.exchange(&sent).await
    }

    /// Sends without KSN and MAC (network management).
    pub async fn send_plain(&mut self, m: Message) -> Message {
        let sent = self.sim.plain(m).unwrap();
        self.exchange(&sent).await
    }
}

pub fn code(m: &Message) -> &str {
    m.response_code().unwrap_or("")
}

/// Merchant services: webhooks and the REST API.
impl Harness {
    /// Restarts the host with the merchant API and the webhook worker.
    pub async fn serve_all(&mut self, outbox: host::outbox::OutboxConfig) {
        if let Some(running) = self.host.take() {
            running.stop().await;
        }
        let options = ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            limits: Limits::default(),
            echo_interval: 60,
        };
        let services = host::runtime::MerchantServices {
            api_listen: "127.0.0.1:0".parse().unwrap(),
            outbox,
        };
        self.host = Some(
            host::runtime::start_all(&self.data, &options, &services)
                .await
                .unwrap(),
        );
    }

    /// Stops the host (terminal server, API, webhook worker).
    pub async fn stop(&mut self) {
        if let Some(running) = self.host.take() {
            running.stop().await;
        }
    }

    /// `http://<api address>` of a host started by [`Harness::serve_all`].
    pub fn api_url(&self) -> String {
        format!(
            "http://{}",
            self.host.as_ref().unwrap().api_addr.expect("serve_all")
        )
    }

    /// Points a merchant's webhook at `url` with `secret` (sealed under the host's master key).
    pub async fn set_webhook(&self, merchant: &str, url: &str, secret: &str) {
        let sealed = self
            .data
            .master
            .seal(host::outbox::WEBHOOK_SECRET_PURPOSE, secret.as_bytes());
        let (merchant, url) = (merchant.to_string(), url.to_string());
        let updated = self
            .data
            .ledger
            .submit(move |tx| {
                tx.sql().execute(
                    "UPDATE merchants SET webhook_url = ?2, webhook_secret = ?3 WHERE merchant_id = ?1",
                    rusqlite::params![merchant, url, sealed],
                )
            })
            .await
            .unwrap();
        assert_eq!(updated, 1);
    }

    /// Gives a merchant an API key.
    pub async fn set_api_key(&self, merchant: &str, key: &str) {
        let (merchant, hash) = (merchant.to_string(), admin::api_key_hash(key));
        let updated = self
            .data
            .ledger
            .submit(move |tx| {
                tx.sql().execute(
                    "UPDATE merchants SET api_key_hash = ?2 WHERE merchant_id = ?1",
                    rusqlite::params![merchant, hash],
                )
            })
            .await
            .unwrap();
        assert_eq!(updated, 1);
    }

    /// Adds a merchant with a terminal and returns the terminal's bundle.
    pub async fn add_merchant_with_terminal(
        &self,
        merchant_id: &str,
        terminal_id: &str,
    ) -> EnrollmentBundle {
        let merchant = MerchantSpec {
            fee_bps: 0,
            merchant_id: merchant_id.into(),
            name: "Second Shop".into(),
            currency: CNY,
            max_amount: 1_000_000,
            webhook_url: None,
            webhook_secret: None,
            api_key: None,
        };
        let prepared = admin::prepare_enrollment(
            &self.data.deployment,
            TerminalSpec {
                terminal_id: terminal_id.into(),
                merchant_id: merchant_id.into(),
                max_amount: 60_000,
                offline_floor: 0,
                hosts: vec![],
            },
        )
        .unwrap();
        let master = self.data.master.clone();
        self.data
            .ledger
            .submit(move |tx| -> Result<EnrollmentBundle, admin::AdminError> {
                admin::add_merchant(tx, &merchant, &master, 0)?;
                admin::enroll(tx, prepared, 0)
            })
            .await
            .unwrap()
    }

    /// A terminal connection with another enrolled terminal's bundle.
    pub async fn terminal_for(&self, bundle: &EnrollmentBundle) -> TestTerminal {
        TestTerminal::connect(self.addr(), bundle, self.data.deployment.ktk().expose())
            .await
            .unwrap()
    }

    /// `(event_id, attempts, delivered, last_error)` of every outbox row, in order.
    pub fn outbox_rows(&self) -> Vec<(String, i64, bool, Option<String>)> {
        let conn = self.data.reader().unwrap();
        let mut stmt = conn
            .prepare("SELECT event_id, attempts, delivered_at IS NOT NULL, last_error FROM outbox ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}

/// Waits until `check` holds, polling every 10 ms, at most 5 s.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
