//! A TCP proxy for failure tests: it forwards bytes both ways between
//! clients and a target until told to swallow the target's next answer and
//! cut the connection (a host that dies after acting, before answering), or
//! to refuse new connections (a host that is down). Loopback only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    cut_next_answer: Arc<AtomicBool>,
    refuse: Arc<AtomicBool>,
    /// Connections accepted so far (each relay's number, from 1).
    opened: Arc<AtomicU64>,
    /// The connection whose next answer is to be cut (0: none).
    cut_connection: Arc<AtomicU64>,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 in front of `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let proxy = Proxy {
            addr: listener.local_addr()?,
            cut_next_answer: Arc::default(),
            refuse: Arc::default(),
            opened: Arc::default(),
            cut_connection: Arc::default(),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if p.refuse.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let number = p.opened.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(relay(
                    client,
                    server,
                    p.cut_next_answer.clone(),
                    (number, p.cut_connection.clone()),
                ));
            }
        });
        Ok(proxy)
    }

    /// The next bytes the target sends are swallowed and both sides cut.
    pub fn cut_next_answer(&self) {
        self.cut_next_answer.store(true, Ordering::SeqCst);
    }

    /// The next bytes the target sends on the newest connection are
    /// swallowed and both its sides cut; older connections (a client's
    /// notification channel opened before its request) carry on.
    pub fn cut_next_answer_on_newest(&self) {
        self.cut_connection
            .store(self.opened.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Refuse (true) or accept (false) new connections.
    pub fn refuse(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }
}

async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    cut: Arc<AtomicBool>,
    (number, cut_connection): (u64, Arc<AtomicU64>),
) {
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let up = async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = cr.read(&mut buf).await.unwrap_or(0);
            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = sr.read(&mut buf).await.unwrap_or(0);
            let cut_here = cut_connection
                .compare_exchange(number, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            if n == 0
                || cut.swap(false, Ordering::SeqCst)
                || cut_here
                || cw.write_all(&buf[..n]).await.is_err()
            {
                break;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
