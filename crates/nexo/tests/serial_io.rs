//! The async serial link over real pseudo-terminal pairs made by socat:
//! exchanges, notifications interleaved with an answer, garbage before
//! frames, line noise from a relay between two pty pairs (the client never
//! returns a payload the terminal did not send), a silent line, a peer
//! that disappears in the middle of a frame, a device that goes away.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexo::inbound::{InboundError, Security, parse_request, parse_response};
use nexo::message::{RequestBody, ResponseBody, SaleToPoiResponse, ToJson};
use nexo::model::{DiagnosisResponse, HostStatus, MessageHeader, Response};
use nexo::serial::{ACK, Config, MAX_PAYLOAD, Receiver, RxEvent, encode_frame};
use nexo::serial_io::{
    ClientConfig, LinkStats, SerialClient, SerialDevice, SerialIoError, ServeConfig, open, serve,
};
use nexo::wire::EventToNotify;
use paycrypto::nexo::NexoKey;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

const BAUD: u32 = 115_200;
/// Safety net for a whole test; no test should come near it.
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// Timeouts for a clean line: the defaults (2 s for an ACK), so that a
/// loaded machine does not cause retransmissions.
const CLEAN: Config = Config {
    max_payload: MAX_PAYLOAD,
    inter_byte_timeout_ms: 500,
    ack_timeout_ms: 2_000,
    max_retransmissions: 3,
};

/// Timeouts for a noisy line: short, so the many retransmissions are quick.
const NOISY: Config = Config {
    max_payload: MAX_PAYLOAD,
    inter_byte_timeout_ms: 100,
    ack_timeout_ms: 250,
    max_retransmissions: 3,
};

/// Two connected pseudo-terminals, `a` and `b`, made by socat.
struct PtyPair {
    dir: PathBuf,
    socat: Child,
}

impl PtyPair {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nexo-serial-io-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("socat.log")).unwrap();
        let pty = |name: &str| format!("pty,raw,echo=0,link={}", dir.join(name).display());
        let socat = Command::new("socat")
            .args(["-d", "-d", &pty("a"), &pty("b")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("socat is needed for the serial tests (scripts/test installs it): {e}")
            });
        let pair = Self { dir, socat };
        // socat logs this once both ptys exist and it copies between them.
        let started = Instant::now();
        loop {
            let log = std::fs::read_to_string(pair.dir.join("socat.log")).unwrap_or_default();
            if log.contains("starting data transfer loop") {
                return pair;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "socat did not start: {log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn a(&self) -> PathBuf {
        self.dir.join("a")
    }

    fn b(&self) -> PathBuf {
        self.dir.join("b")
    }

    /// Ends socat: both ptys hang up, as a device that is unplugged.
    fn hang_up(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        self.hang_up();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn port(path: &Path) -> SerialDevice {
    open(path.to_str().unwrap(), BAUD).unwrap()
}

/// The Diagnosis request of the fixtures with its own `ServiceID`.
fn request(service_id: &str) -> Vec<u8> {
    let mut json: Value =
        serde_json::from_str(include_str!("fixtures/requests/diagnosis.json")).unwrap();
    json["SaleToPOIRequest"]["MessageHeader"]["ServiceID"] = service_id.into();
    serde_json::to_vec(&json).unwrap()
}

/// A `DisplayRequest` notification saying `text`.
fn display(text: &str) -> Vec<u8> {
    let mut json: Value =
        serde_json::from_str(include_str!("fixtures/requests/display.json")).unwrap();
    json["SaleToPOIRequest"]["DisplayRequest"]["DisplayOutput"][0]["OutputContent"]["OutputText"]
        [0]["Text"] = text.into();
    serde_json::to_vec(&json).unwrap()
}

fn header_of(request: &[u8]) -> MessageHeader {
    parse_request(request, Security::Plain)
        .unwrap()
        .message
        .header
}

/// The terminal's answer to a Diagnosis request: the response with its
/// header and `hosts` host statuses (to make answers of any size).
fn diagnosis_answer(request: &[u8], hosts: usize) -> Vec<u8> {
    let header = header_of(request);
    let body = ResponseBody::Diagnosis(DiagnosisResponse {
        response: Response::success(),
        logged_sale_id: vec!["ECR-1".into()],
        poi_status: None,
        host_status: (0..hosts)
            .map(|i| HostStatus {
                acquirer_id: format!("acquirer-{i:05}"),
                is_reachable_flag: Some(i % 2 == 0),
            })
            .collect(),
    });
    SaleToPoiResponse::answer(&header, body)
        .to_json()
        .into_bytes()
}

fn service_id_of(response: &[u8]) -> String {
    parse_response(response, Security::Plain)
        .unwrap()
        .message
        .header
        .service_id
        .unwrap()
}

/// A terminal serving `port` with Diagnosis answers (`hosts` statuses
/// each), recording every answer it sends; stopped by the sender returned.
struct Terminal {
    sent: Arc<Mutex<HashSet<Vec<u8>>>>,
    handled: Arc<AtomicU64>,
    notify: mpsc::Sender<Vec<u8>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<LinkStats, SerialIoError>>,
}

impl Terminal {
    fn start<S>(port: S, link: Config, hosts: usize) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let sent = Arc::new(Mutex::new(HashSet::new()));
        let handled = Arc::new(AtomicU64::new(0));
        // One place: `reserve` then waits until the terminal took it.
        let (notify, notifications) = mpsc::channel(1);
        let (stop, stopped) = oneshot::channel::<()>();
        let config = ServeConfig {
            link,
            ..ServeConfig::default()
        };
        let (sent_by_handler, handled_by_handler) = (sent.clone(), handled.clone());
        let handler = move |request: Vec<u8>| {
            let sent = sent_by_handler.clone();
            let handled = handled_by_handler.clone();
            async move {
                handled.fetch_add(1, Ordering::Relaxed);
                let answer = diagnosis_answer(&request, hosts);
                sent.lock().unwrap().insert(answer.clone());
                answer
            }
        };
        let task = tokio::spawn(serve(port, config, handler, notifications, async {
            let _ = stopped.await;
        }));
        Self {
            sent,
            handled,
            notify,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) -> LinkStats {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap()
    }
}

fn client<S: AsyncRead + AsyncWrite>(port: S, link: Config) -> SerialClient<S> {
    // Long enough for any exchange on a clean line, short enough that a
    // noisy line whose answer was given up on does not hold a test long.
    let answer_timeout = if link == NOISY {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(20)
    };
    SerialClient::new(
        port,
        ClientConfig {
            link,
            answer_timeout,
        },
    )
}

async fn limited<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("the test finished within its safety limit")
}

#[tokio::test]
async fn exchanges_round_trip() {
    limited(async {
        let pair = PtyPair::new();
        let terminal = Terminal::start(port(&pair.b()), CLEAN, 2);
        let mut client = client(port(&pair.a()), CLEAN);
        for i in 0..20 {
            let service_id = format!("S{i:04}");
            let request = request(&service_id);
            let answer = client
                .exchange(&request, |n| panic!("no notification expected: {n:?}"))
                .await
                .unwrap();
            assert_eq!(answer, diagnosis_answer(&request, 2));
            assert_eq!(service_id_of(&answer), service_id);
        }
        assert_eq!(terminal.handled.load(Ordering::Relaxed), 20);
        let stats = terminal.stop().await;
        assert_eq!(terminal_handled(&stats), 20, "{stats:?}");
        let client_stats = client.stats();
        assert_eq!(client_stats.received - client_stats.duplicates, 20);
    })
    .await;
}

#[tokio::test]
async fn large_answers_cross_in_several_reads_and_writes() {
    limited(async {
        let pair = PtyPair::new();
        // About 45 KB of answer: many pty reads and writes per frame.
        let terminal = Terminal::start(port(&pair.b()), CLEAN, 900);
        let mut client = client(port(&pair.a()), CLEAN);
        for i in 0..3 {
            let request = request(&format!("BIG{i}"));
            let answer = client.exchange(&request, drop).await.unwrap();
            assert!(answer.len() > 40_000, "{} bytes", answer.len());
            assert_eq!(answer, diagnosis_answer(&request, 900));
        }
        terminal.stop().await;
    })
    .await;
}

#[tokio::test]
async fn notifications_arrive_before_the_answer() {
    limited(async {
        let pair = PtyPair::new();
        // A handler that pushes three notifications and answers once the
        // last of them was handed to the link (the channel is empty again).
        let (notify, notifications) = mpsc::channel(1);
        let handler = move |request: Vec<u8>| {
            let notify = notify.clone();
            async move {
                for step in ["Present card", "Enter PIN", "Processing"] {
                    notify.send(display(step)).await.unwrap();
                }
                drop(notify.reserve().await.unwrap());
                diagnosis_answer(&request, 1)
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            port(&pair.b()),
            ServeConfig {
                link: CLEAN,
                max_handlers: 2,
            },
            handler,
            notifications,
            async {
                let _ = stopped.await;
            },
        ));
        let mut client = client(port(&pair.a()), CLEAN);
        let request = request("PAY-1");
        let mut seen = Vec::new();
        let answer = client.exchange(&request, |n| seen.push(n)).await.unwrap();
        assert_eq!(answer, diagnosis_answer(&request, 1));
        assert_eq!(
            seen,
            [
                display("Present card"),
                display("Enter PIN"),
                display("Processing")
            ]
        );
        for n in &seen {
            let parsed = parse_request(n, Security::Plain).unwrap().message;
            assert!(matches!(parsed.body, RequestBody::Display(_)));
        }
        stop.send(()).unwrap();
        let stats = server.await.unwrap().unwrap();
        assert_eq!(terminal_handled(&stats), 1, "{stats:?}");
    })
    .await;
}

#[tokio::test]
async fn notifications_between_exchanges_come_with_the_next() {
    limited(async {
        let pair = PtyPair::new();
        let terminal = Terminal::start(port(&pair.b()), CLEAN, 1);
        let mut client = client(port(&pair.a()), CLEAN);
        client.exchange(&request("A"), drop).await.unwrap();
        terminal.notify.send(display("Welcome")).await.unwrap();
        // Sent (or being sent) before the next request is answered.
        drop(terminal.notify.reserve().await.unwrap());
        let mut seen = Vec::new();
        client
            .exchange(&request("B"), |n| seen.push(n))
            .await
            .unwrap();
        assert_eq!(seen, [display("Welcome")]);
        terminal.stop().await;
    })
    .await;
}

#[tokio::test]
async fn garbage_before_frames_is_skipped() {
    limited(async {
        let pair = PtyPair::new();
        let terminal = Terminal::start(port(&pair.b()), CLEAN, 1);
        let mut a = port(&pair.a());
        // Noise with a stray STX whose length swallows the next frame's
        // start, and stray ACK/NAK: the terminal rescans after the
        // abandoned frame and still finds the request.
        a.write_all(b"\x00\xffAT+noise\x06\x15\r\n\x02\x00\x40garbage")
            .await
            .unwrap();
        let mut client = client(a, CLEAN);
        let request = request("AFTER-GARBAGE");
        let answer = client.exchange(&request, drop).await.unwrap();
        assert_eq!(answer, diagnosis_answer(&request, 1));
        let stats = terminal.stop().await;
        assert!(stats.discarded >= 1, "{stats:?}");
        assert_eq!(terminal_handled(&stats), 1);
    })
    .await;
}

/// Requests acted on: received minus repetitions (nothing is dropped in
/// these tests).
fn terminal_handled(stats: &LinkStats) -> u64 {
    stats.received - stats.duplicates - stats.ignored
}

/// A byte stream in one direction of the relay, damaged from a seeded
/// generator: about one byte in `one_in` is flipped, dropped, or preceded
/// by an inserted byte.
async fn damage_copy<S: AsyncRead + AsyncWrite>(
    mut from: tokio::io::ReadHalf<S>,
    mut to: tokio::io::WriteHalf<S>,
    seed: u64,
    one_in: u64,
    damaged: Arc<AtomicU64>,
) {
    let mut rng = SplitMix64(seed);
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n + 8);
        for &byte in &buf[..n] {
            if !rng.next().is_multiple_of(one_in) {
                out.push(byte);
                continue;
            }
            damaged.fetch_add(1, Ordering::Relaxed);
            match rng.next() % 3 {
                0 => out.push(byte ^ (1 << (rng.next() % 8))),
                1 => {}
                _ => {
                    out.push(rng.next() as u8);
                    out.push(byte);
                }
            }
        }
        if to.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// A small deterministic generator (SplitMix64).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Client — pty pair — noise relay — pty pair — terminal. Returns the
/// exchanges that completed, those that failed, and the bytes damaged.
async fn noisy_session(seed: u64, one_in: u64, exchanges: usize) -> (usize, usize, u64) {
    let client_side = PtyPair::new();
    let terminal_side = PtyPair::new();
    noisy_exchanges(
        [
            port(&client_side.a()),
            port(&client_side.b()),
            port(&terminal_side.a()),
            port(&terminal_side.b()),
        ],
        seed,
        one_in,
        exchanges,
    )
    .await
}

/// Exchanges between a client on `ends[0]` and a terminal on `ends[3]`,
/// through a relay copying between `ends[1]` (connected to `ends[0]`) and
/// `ends[2]` (connected to `ends[3]`) with damage. Checks the property:
/// every answer the client returns is one the terminal sent, for this
/// request; every failure is a retransmission or timeout error.
async fn noisy_exchanges<S>(
    ends: [S; 4],
    seed: u64,
    one_in: u64,
    exchanges: usize,
) -> (usize, usize, u64)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let [client_end, relay_left, relay_right, terminal_end] = ends;
    let terminal = Terminal::start(terminal_end, NOISY, 3);
    let (left_read, left_write) = tokio::io::split(relay_left);
    let (right_read, right_write) = tokio::io::split(relay_right);
    let damaged = Arc::new(AtomicU64::new(0));
    let upstream = tokio::spawn(damage_copy(
        left_read,
        right_write,
        seed,
        one_in,
        damaged.clone(),
    ));
    let downstream = tokio::spawn(damage_copy(
        right_read,
        left_write,
        seed ^ 0x5555_5555,
        one_in,
        damaged.clone(),
    ));
    let mut client = client(client_end, NOISY);
    let (mut completed, mut failed) = (0, 0);
    for i in 0..exchanges {
        let service_id = format!("N{seed}-{i}");
        let request = request(&service_id);
        match client.exchange(&request, drop).await {
            Ok(answer) => {
                // The property: only what the terminal sent, and the
                // answer to this request.
                assert!(
                    terminal.sent.lock().unwrap().contains(&answer),
                    "seed {seed}: the client returned a payload the terminal never sent"
                );
                assert_eq!(service_id_of(&answer), service_id, "seed {seed}");
                completed += 1;
            }
            Err(SerialIoError::RetransmissionsExhausted { .. } | SerialIoError::Timeout { .. }) => {
                failed += 1
            }
            Err(e) => panic!("seed {seed}: unexpected error {e}"),
        }
    }
    upstream.abort();
    downstream.abort();
    let stats = terminal.stop().await;
    println!(
        "seed {seed}, one byte in {one_in} damaged: {completed} exchanges completed, \
         {failed} failed, {} bytes damaged; terminal {stats:?}; client {:?}",
        damaged.load(Ordering::Relaxed),
        client.stats()
    );
    (completed, failed, damaged.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_noise_never_delivers_a_wrong_payload() {
    limited(async {
        let (mut completed, mut damaged) = (0, 0);
        for seed in [1, 2, 3, 4] {
            let (ok, _failed, hits) = noisy_session(seed, 800, 12).await;
            completed += ok;
            damaged += hits;
        }
        assert!(damaged > 20, "the relay damaged {damaged} bytes");
        assert!(
            completed > 0,
            "retransmission gets exchanges through a noisy line"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_noise_fails_with_a_clear_error() {
    limited(async {
        let (mut completed, mut failed) = (0, 0);
        for seed in [7, 8] {
            let (ok, bad, _) = noisy_session(seed, 12, 6).await;
            completed += ok;
            failed += bad;
        }
        assert!(failed > 0, "{completed} completed, none failed");
    })
    .await;
}

/// The same property over in-memory streams with tokio's clock paused
/// (timeouts pass at once, the run is deterministic): many more seeds and
/// noise levels than the ptys allow in the time.
#[tokio::test(start_paused = true)]
async fn no_wrong_payload_under_any_seeded_noise() {
    // A limit in the paused clock: a run that waits on nothing but it ends.
    tokio::time::timeout(Duration::from_secs(24 * 3600), async {
        let (mut completed, mut failed) = (0, 0);
        for seed in 0..200 {
            let one_in = [50, 200, 800, 3200][seed as usize % 4];
            // Small buffers: frames cross in many pieces.
            let (client_end, relay_left) = tokio::io::duplex(61);
            let (relay_right, terminal_end) = tokio::io::duplex(61);
            let (ok, bad, _) = noisy_exchanges(
                [client_end, relay_left, relay_right, terminal_end],
                1000 + seed,
                one_in,
                8,
            )
            .await;
            completed += ok;
            failed += bad;
        }
        assert!(
            completed > 400 && failed > 200,
            "{completed} completed, {failed} failed"
        );
    })
    .await
    .expect("the run ended");
}

#[tokio::test]
async fn a_silent_line_exhausts_retransmissions() {
    limited(async {
        let pair = PtyPair::new();
        // `b` is open and never read: nothing answers.
        let _b = port(&pair.b());
        let mut client = client(
            port(&pair.a()),
            Config {
                ack_timeout_ms: 100,
                ..CLEAN
            },
        );
        let error = client.exchange(&request("LOST"), drop).await.unwrap_err();
        assert!(
            matches!(
                error,
                SerialIoError::RetransmissionsExhausted { transmissions: 4 }
            ),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "the message was not acknowledged after 4 transmissions"
        );
    })
    .await;
}

/// Reads frames from `stream` with the sans-IO receiver until one arrives,
/// acknowledging it.
async fn read_frame(stream: &mut SerialDevice, rx: &mut Receiver) -> Vec<u8> {
    let mut buf = [0u8; 1024];
    loop {
        if let Some(event) = rx.poll_event() {
            if let RxEvent::Frame(payload) = event {
                while let Some(reply) = rx.poll_transmit() {
                    stream.write_all(&[reply]).await.unwrap();
                }
                return payload;
            }
            continue;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client closed");
        rx.handle_input(0, &buf[..n]);
    }
}

#[tokio::test]
async fn the_terminal_going_away_mid_frame_is_reported() {
    limited(async {
        let mut pair = PtyPair::new();
        let mut terminal = port(&pair.b());
        let mut client = client(port(&pair.a()), CLEAN);
        let request = request("HALF");
        let exchange = tokio::spawn(async move {
            let outcome = client.exchange(&request, drop).await;
            (outcome, client.stats())
        });
        let mut rx = Receiver::new(CLEAN);
        let received = read_frame(&mut terminal, &mut rx).await;
        let answer = encode_frame(&diagnosis_answer(&received, 1)).unwrap();
        terminal
            .write_all(&answer[..answer.len() / 2])
            .await
            .unwrap();
        pair.hang_up();
        let (outcome, stats) = exchange.await.unwrap();
        assert!(matches!(outcome, Err(SerialIoError::Closed)), "{outcome:?}");
        assert_eq!(stats.received, 0);
    })
    .await;
}

#[tokio::test]
async fn a_client_vanishing_mid_frame_does_not_stop_the_terminal() {
    limited(async {
        let mut pair = PtyPair::new();
        let terminal = Terminal::start(port(&pair.b()), CLEAN, 1);
        {
            // A client that writes half a request and goes away; socat
            // stays, so the terminal sees silence in the middle of a frame.
            let mut vanishing = port(&pair.a());
            let frame = encode_frame(&request("VANISHED")).unwrap();
            vanishing
                .write_all(&frame[..frame.len() / 2])
                .await
                .unwrap();
            vanishing.flush().await.unwrap();
        }
        // The next client's frame may land inside the abandoned one: the
        // terminal rescans and answers it all the same.
        let mut client = client(port(&pair.a()), CLEAN);
        let request = request("NEXT");
        let answer = client.exchange(&request, drop).await.unwrap();
        assert_eq!(answer, diagnosis_answer(&request, 1));
        assert_eq!(terminal.handled.load(Ordering::Relaxed), 1);
        // Unplugging the device ends the terminal's side cleanly.
        let Terminal { task, stop, .. } = terminal;
        pair.hang_up();
        let stats = task.await.unwrap().unwrap();
        drop(stop);
        assert!(stats.discarded >= 1, "{stats:?}");
    })
    .await;
}

#[tokio::test]
async fn repeated_requests_are_answered_once() {
    limited(async {
        let pair = PtyPair::new();
        let terminal = Terminal::start(port(&pair.b()), CLEAN, 1);
        let mut a = port(&pair.a());
        let mut rx = Receiver::new(CLEAN);
        let first = request("ONCE");
        let frame = encode_frame(&first).unwrap();
        // The same frame twice, as after a lost ACK, then another request.
        a.write_all(&frame).await.unwrap();
        a.write_all(&frame).await.unwrap();
        let second = request("TWICE");
        a.write_all(&encode_frame(&second).unwrap()).await.unwrap();
        let mut answers = Vec::new();
        while answers.len() < 2 {
            answers.push(read_frame(&mut a, &mut rx).await);
        }
        assert_eq!(
            answers,
            [diagnosis_answer(&first, 1), diagnosis_answer(&second, 1)]
        );
        let handled = terminal.handled.clone();
        let stats = terminal.stop().await;
        assert_eq!(stats.duplicates, 1, "{stats:?}");
        assert_eq!(handled.load(Ordering::Relaxed), 2);
    })
    .await;
}

#[tokio::test]
async fn stale_answers_are_dropped_and_rejects_answer() {
    limited(async {
        let pair = PtyPair::new();
        let mut terminal = port(&pair.b());
        let mut client = client(port(&pair.a()), CLEAN);
        let request = request("CURRENT");
        let stale = diagnosis_answer(&self::request("EARLIER"), 1);
        let expected = diagnosis_answer(&request, 1);
        let peer = {
            let (stale, expected) = (stale.clone(), expected.clone());
            tokio::spawn(async move {
                let mut rx = Receiver::new(CLEAN);
                let received = read_frame(&mut terminal, &mut rx).await;
                // A repeated answer of an earlier exchange, a notification,
                // then the answer; each waits for its ACK.
                for message in [stale, display("Hello"), expected] {
                    terminal
                        .write_all(&encode_frame(&message).unwrap())
                        .await
                        .unwrap();
                    let mut ack = [0u8];
                    terminal.read_exact(&mut ack).await.unwrap();
                    assert_eq!(ack[0], ACK);
                }
                // The second request is refused with a Reject, as a
                // terminal requiring message security does.
                let received_again = read_frame(&mut terminal, &mut rx).await;
                let key = NexoKey::derive("passphrase", "key", 1).unwrap();
                let reject = parse_request(&received_again, Security::Required(&key))
                    .map(drop)
                    .unwrap_err();
                assert!(matches!(reject, InboundError::Security { .. }));
                let now = OffsetDateTime::now_utc();
                let reply = reject.reply("posnet-terminal-1", &received_again, now);
                terminal
                    .write_all(&encode_frame(reply.to_json().as_bytes()).unwrap())
                    .await
                    .unwrap();
                (received, terminal)
            })
        };
        let mut seen = Vec::new();
        let answer = client.exchange(&request, |n| seen.push(n)).await.unwrap();
        assert_eq!(answer, expected);
        assert_ne!(answer, stale);
        assert_eq!(seen, [display("Hello")]);
        assert_eq!(client.stats().ignored, 1);

        let refused = self::request("REFUSED");
        let reject = client.exchange(&refused, drop).await.unwrap();
        let reject = parse_request(&reject, Security::Plain).unwrap().message;
        let RequestBody::Event(event) = &reject.body else {
            panic!("not an event: {reject:?}");
        };
        assert_eq!(event.event_to_notify, EventToNotify::Reject);
        assert_eq!(reject.header.service_id.as_deref(), Some("REFUSED"));
        let (received, _terminal) = peer.await.unwrap();
        assert_eq!(received, request);
    })
    .await;
}

#[tokio::test]
async fn secured_answers_are_recognised_by_their_clear_header() {
    limited(async {
        let pair = PtyPair::new();
        let key = Arc::new(NexoKey::derive("serial passphrase", "serial-key", 1).unwrap());
        let (_notify, notifications) = mpsc::channel(1);
        let handler = {
            let key = key.clone();
            move |request: Vec<u8>| {
                let key = key.clone();
                async move {
                    let inbound = parse_request(&request, Security::Required(&key)).unwrap();
                    assert!(inbound.secured);
                    let answer = diagnosis_answer(inbound.message.to_json().as_bytes(), 1);
                    paycrypto::nexo::encrypt(&key, &answer)
                        .unwrap()
                        .into_bytes()
                }
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            port(&pair.b()),
            ServeConfig {
                link: CLEAN,
                ..ServeConfig::default()
            },
            handler,
            notifications,
            async {
                let _ = stopped.await;
            },
        ));
        let mut client = client(port(&pair.a()), CLEAN);
        let request = paycrypto::nexo::encrypt(&key, &request("SECURED")).unwrap();
        let answer = client.exchange(request.as_bytes(), drop).await.unwrap();
        let response = parse_response(&answer, Security::Required(&key)).unwrap();
        assert!(response.secured);
        assert_eq!(
            response.message.header.service_id.as_deref(),
            Some("SECURED")
        );
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn one_way_messages_return_once_acknowledged() {
    limited(async {
        let pair = PtyPair::new();
        let (_notify, notifications) = mpsc::channel(1);
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler = {
            let received = received.clone();
            move |message: Vec<u8>| {
                received.lock().unwrap().push(message);
                // An abort has no answer of its own.
                async { Vec::new() }
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            port(&pair.b()),
            ServeConfig {
                link: CLEAN,
                ..ServeConfig::default()
            },
            handler,
            notifications,
            async {
                let _ = stopped.await;
            },
        ));
        let mut client = client(port(&pair.a()), CLEAN);
        let abort = include_bytes!("fixtures/requests/abort.json");
        client.send(abort, drop).await.unwrap();
        stop.send(()).unwrap();
        let stats = server.await.unwrap().unwrap();
        assert_eq!(stats.delivered, 0, "nothing sent back");
        assert_eq!(received.lock().unwrap().as_slice(), [abort.to_vec()]);
    })
    .await;
}

#[tokio::test]
async fn requests_must_be_nexo_requests() {
    limited(async {
        let pair = PtyPair::new();
        let mut client = client(port(&pair.a()), CLEAN);
        let response = diagnosis_answer(&request("X"), 1);
        for bad in [&b"not json"[..], &response[..], &b"{}"[..]] {
            let error = client.exchange(bad, drop).await.unwrap_err();
            assert!(matches!(error, SerialIoError::NotARequest(_)), "{error}");
        }
        assert_eq!(client.stats(), LinkStats::default(), "nothing was sent");
    })
    .await;
}

#[tokio::test]
async fn opening_a_missing_device_names_it() {
    limited(async {
        let error = open("/dev/posnet-no-such-tty", 9600).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("cannot open serial device /dev/posnet-no-such-tty at 9600 baud"),
            "{message}"
        );
    })
    .await;
}
