//! Certificate pinning over real TLS on loopback: a terminal presenting
//! the pinned certificate is accepted (TLS 1.3 and 1.2), any other
//! certificate is refused with the mismatch error naming both
//! fingerprints, and a payment is then never attempted again.

use std::sync::Arc;
use std::time::Duration;

use nexo::pairing::{Pairing, fingerprint_text};
use phone::history::State;
use phone::retry::Backoff;
use phone::transport::{Https, Timeouts, TransportError};
use phone::{Event, Money, Options, Phone, PhoneError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use zeroize::Zeroizing;

struct Terminal {
    der: CertificateDer<'static>,
    port: u16,
}

/// A TLS server on loopback with a fresh self-signed certificate that
/// answers `ping` with `pong` on each connection.
async fn tls_server(versions: &[&'static rustls::SupportedProtocolVersion]) -> Terminal {
    let certified = rcgen::generate_simple_self_signed(vec!["posnet-terminal".into()]).unwrap();
    let der = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![der.clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4];
                if tls.read_exact(&mut buf).await.is_ok() && &buf == b"ping" {
                    let _ = tls.write_all(b"pong").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    Terminal { der, port }
}

fn pairing(port: u16, pinned: &CertificateDer<'_>) -> Pairing {
    Pairing {
        host: "127.0.0.1".into(),
        port,
        cert_sha256: pki::tls::fingerprint(pinned),
        poi_id: "posnet-terminal-1".into(),
        key_identifier: "phone-1".into(),
        key_version: 1,
        passphrase: Zeroizing::new("pairing passphrase".into()),
    }
}

fn timeouts() -> Timeouts {
    // Safety nets only: every step here completes on loopback at once.
    Timeouts {
        connect: Duration::from_secs(10),
        answer: Duration::from_secs(10),
    }
}

async fn ping(https: &Https) -> Result<Vec<u8>, TransportError> {
    let mut tls = https.connect().await?;
    tls.write_all(b"ping").await.unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    Ok(answer)
}

#[tokio::test]
async fn the_pinned_certificate_is_accepted_over_tls_13_and_12() {
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let terminal = tls_server(versions).await;
        let https = Https::new(&pairing(terminal.port, &terminal.der), timeouts()).unwrap();
        assert_eq!(ping(&https).await.unwrap(), b"pong");
    }
}

#[tokio::test]
async fn another_certificate_is_refused_with_both_fingerprints() {
    let terminal = tls_server(&[&rustls::version::TLS13]).await;
    let impostor = rcgen::generate_simple_self_signed(vec!["posnet-terminal".into()]).unwrap();
    let pinned = impostor.cert.der();
    let https = Https::new(&pairing(terminal.port, pinned), timeouts()).unwrap();
    let err = ping(&https).await.unwrap_err();
    let TransportError::CertificateMismatch(mismatch) = &err else {
        panic!("expected a certificate mismatch, got {err}");
    };
    assert_eq!(mismatch.expected, pki::tls::fingerprint(pinned));
    assert_eq!(mismatch.got, pki::tls::fingerprint(&terminal.der));
    assert_eq!(
        err.to_string(),
        format!(
            "certificate mismatch: expected {}, got {} — the terminal was replaced or someone is intercepting; re-pair if you replaced it",
            fingerprint_text(&mismatch.expected),
            fingerprint_text(&mismatch.got)
        )
    );
    assert!(!err.retriable() && !err.maybe_delivered());
}

#[tokio::test]
async fn a_payment_to_an_impostor_is_not_sent_nor_retried() {
    let terminal = tls_server(&[&rustls::version::TLS13]).await;
    let impostor = rcgen::generate_simple_self_signed(vec!["posnet-terminal".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        timeouts: timeouts(),
        ..Options::new(dir.path())
    };
    let mut phone =
        Phone::with_pairing(options, pairing(terminal.port, impostor.cert.der())).unwrap();
    let mut events = Vec::new();
    let err = phone
        .pay(&Money::parse("12.50", "EUR").unwrap(), &mut |e| {
            events.push(e)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PhoneError::Unreachable {
                attempts: 1,
                last: TransportError::CertificateMismatch(_)
            }
        ),
        "{err}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Retry { .. })),
        "{events:?}"
    );
    let record = &phone.history().list(1).unwrap()[0];
    assert_eq!(record.state, State::NotSent);
    assert!(
        record
            .reason
            .as_deref()
            .unwrap()
            .contains("certificate mismatch")
    );
}

#[tokio::test]
async fn an_unreachable_terminal_is_retried_with_backoff_then_reported() {
    // A port with nothing listening: bind, note the port, close.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let cert = rcgen::generate_simple_self_signed(vec!["t".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let connect = Backoff {
        attempts: 3,
        initial: Duration::from_millis(1),
        max: Duration::from_millis(2),
    };
    let options = Options {
        timeouts: timeouts(),
        connect,
        ..Options::new(dir.path())
    };
    let mut phone = Phone::with_pairing(options, pairing(port, cert.cert.der())).unwrap();
    let mut events = Vec::new();
    let err = phone
        .pay(&Money::parse("1", "EUR").unwrap(), &mut |e| events.push(e))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PhoneError::Unreachable {
                attempts: 3,
                last: TransportError::Connect { .. }
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot connect to the terminal at 127.0.0.1:{port}"
        )),
        "{message}"
    );
    assert!(
        message.ends_with("(gave up after 3 attempt(s))"),
        "{message}"
    );
    let pauses: Vec<(u32, Duration)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Retry { attempt, pause, .. } => Some((*attempt, *pause)),
            _ => None,
        })
        .collect();
    assert_eq!(
        pauses,
        [(2, Duration::from_millis(1)), (3, Duration::from_millis(2))]
    );
}
