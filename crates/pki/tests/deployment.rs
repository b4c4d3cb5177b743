//! A deployment end to end: keys sealed at rest, certificates issued, and
//! mutual TLS on loopback admitting only enrolled, non-revoked terminals.

use pki::tls::{client_config, server_config};
use pki::{Deployment, InitOptions, MasterKey, PeerTerminal};
use rustls::pki_types::ServerName;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn deployment() -> (tempfile::TempDir, MasterKey, Deployment) {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let d = Deployment::init(dir.path(), &master, &InitOptions::default()).unwrap();
    (dir, master, d)
}

#[test]
fn secrets_are_sealed_0600_and_need_the_master_key() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, master, d) = deployment();
    for name in [
        "ca.key.sealed",
        "host.key.sealed",
        "bdk.sealed",
        "ktk.sealed",
    ] {
        let path = dir.path().join(name);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600,
            "{name}"
        );
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(16).any(|w| w == &d.bdk().expose()[..16]),
            "{name} holds the BDK in clear"
        );
        assert!(
            !String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"),
            "{name} holds a key in clear"
        );
    }
    let again = Deployment::load(dir.path(), &master).unwrap();
    assert_eq!(again.bdk().expose(), d.bdk().expose());
    let err = Deployment::load(dir.path(), &MasterKey::generate()).unwrap_err();
    assert!(err.to_string().contains("cannot unseal"), "{err}");
    // A sealed file is bound to its purpose: the KTK cannot pass for the BDK.
    std::fs::copy(dir.path().join("ktk.sealed"), dir.path().join("bdk.sealed")).unwrap();
    assert!(Deployment::load(dir.path(), &master).is_err());
    assert!(matches!(
        Deployment::init(dir.path(), &master, &InitOptions::default()),
        Err(pki::PkiError::Exists(_))
    ));
    assert!(!format!("{:?} {:?}", d.bdk(), master).contains(&hex::encode(d.bdk().expose())));
}

#[test]
fn databases_are_restricted_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db");
    pki::seal::restrict_to_owner(&fresh).unwrap();
    assert_eq!(
        std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let old = dir.path().join("old.db");
    std::fs::write(&old, b"data").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    pki::seal::restrict_to_owner(&old).unwrap();
    assert_eq!(
        std::fs::metadata(&old).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read(&old).unwrap(), b"data", "contents untouched");
}

#[test]
fn terminal_ids_must_fit_the_iso_fields() {
    let (_dir, _m, d) = deployment();
    assert!(
        d.issue_terminal_certificate("T001", "M00000000000001")
            .is_err()
    );
    assert!(d.issue_terminal_certificate("T0000001", "M1").is_err());
    let cert = d
        .issue_terminal_certificate("T0000001", "M00000000000001")
        .unwrap();
    let der = pki::tls::certificates(&cert.cert_pem, "cert").unwrap();
    let peer = PeerTerminal::from_der(&der[0]).unwrap();
    assert_eq!(peer.terminal_id, "T0000001");
    assert_eq!(peer.fingerprint, cert.fingerprint);
}

/// Serves one TLS connection: echoes one line prefixed with the peer's terminal id.
async fn serve(
    d: &Deployment,
    revoked: Arc<Mutex<HashSet<String>>>,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let admit: pki::Admission =
        Arc::new(move |peer: &PeerTerminal| !revoked.lock().unwrap().contains(&peer.terminal_id));
    let config = server_config(
        d.ca_cert_pem(),
        d.host_cert_pem(),
        d.host_key_pem().expose(),
        admit,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = TlsAcceptor::from(config)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let peer =
            PeerTerminal::from_der(&tls.get_ref().1.peer_certificates().unwrap()[0]).unwrap();
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(format!("{}:{}", peer.terminal_id, String::from_utf8_lossy(&buf)).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())
    });
    (addr, task)
}

async fn call(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    tls.write_all(b"hello").await?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn mutual_tls_admits_enrolled_terminals_only() {
    let (_dir, _m, d) = deployment();
    let revoked = Arc::new(Mutex::new(HashSet::new()));
    let t1 = d
        .issue_terminal_certificate("T0000001", "M00000000000001")
        .unwrap();
    let good = client_config(d.ca_cert_pem(), &t1.cert_pem, t1.key_pem.expose()).unwrap();

    let (addr, server) = serve(&d, revoked.clone()).await;
    assert_eq!(call(addr, good.clone()).await.unwrap(), "T0000001:hello");
    server.await.unwrap().unwrap();

    // A certificate from another deployment's CA is refused at the handshake.
    let (_dir2, _m2, other) = deployment();
    let stranger = other
        .issue_terminal_certificate("T0000001", "M00000000000001")
        .unwrap();
    let stranger = client_config(
        d.ca_cert_pem(),
        &stranger.cert_pem,
        stranger.key_pem.expose(),
    )
    .unwrap();
    let (addr, server) = serve(&d, revoked.clone()).await;
    assert!(call(addr, stranger).await.is_err());
    assert!(
        server.await.unwrap().is_err(),
        "the server never got application data"
    );

    // Revoked terminals are refused at the handshake too.
    revoked.lock().unwrap().insert("T0000001".to_string());
    let (addr, server) = serve(&d, revoked.clone()).await;
    assert!(call(addr, good).await.is_err());
    let err = server.await.unwrap().unwrap_err();
    assert!(err.to_lowercase().contains("revoked"), "{err}");
}
