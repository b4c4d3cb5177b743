//! The ECR interface over a serial link (a USB-serial cable, a Bluetooth
//! RFCOMM channel bound to `/dev/rfcomm0`): nexo's serial framing
//! ([`nexo::serial_io`]) in front of [`EcrService::handle`], the same
//! messages with the same message security as over HTTPS.
//!
//! A cable carries one Sale system at a time, so the link follows the key
//! its requests are secured with: the display and event notifications of
//! payments are pushed, between answers, under the key of the latest
//! request. A peer naming a key it does not hold gets notifications it
//! cannot open.

use super::{EcrService, Link, protocol};
use nexo::serial_io::{LinkStats, SerialIoError, ServeConfig};
use std::future::Future;
use tokio::sync::{mpsc, watch};

/// Notifications waiting for the link; beyond this the oldest waiting
/// ones are not sent (a phone that stopped reading never blocks a payment).
const NOTIFICATION_QUEUE: usize = 64;

/// Serves the ECR interface on the serial device at `path` until the
/// device closes or `shutdown` completes.
pub async fn serve_device(
    ecr: EcrService,
    path: &str,
    baud: u32,
    shutdown: impl Future<Output = ()>,
) -> Result<LinkStats, SerialIoError> {
    let device = nexo::serial_io::open(path, baud)?;
    tracing::info!(path, baud, "nexo serial link open");
    let (key_tx, key_rx) = watch::channel(None::<(String, u64)>);
    let (notify, pushed) = mpsc::channel(NOTIFICATION_QUEUE);
    let follower = tokio::spawn(follow_key(ecr.clone(), key_rx, notify));
    let served = nexo::serial_io::serve(
        device,
        ServeConfig::default(),
        move |request| {
            if let Some((kid, kv)) = protocol::envelope(&request).and_then(|e| e.key)
                && !kid.is_empty()
            {
                key_tx.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(&(kid.clone(), kv));
                    if changed {
                        *current = Some((kid, kv));
                    }
                    changed
                });
            }
            let ecr = ecr.clone();
            async move { ecr.handle(&request, Link::secured_only()).await }
        },
        pushed,
        shutdown,
    )
    .await;
    follower.abort();
    served
}

/// Forwards the notifications of the pairing named by `key` to `notify`,
/// switching when the key changes, until the link's side goes away.
async fn follow_key(
    ecr: EcrService,
    mut key: watch::Receiver<Option<(String, u64)>>,
    notify: mpsc::Sender<Vec<u8>>,
) {
    loop {
        let current = key.borrow_and_update().clone();
        let mut subscription = current.and_then(|(kid, kv)| ecr.notifications(&kid, kv).ok());
        loop {
            tokio::select! {
                changed = key.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                message = async {
                    match subscription.as_mut() {
                        Some(s) => s.next().await,
                        None => std::future::pending().await,
                    }
                } => match message {
                    // A full queue drops this one: never wait on the link.
                    Some(bytes) => {
                        if let Err(mpsc::error::TrySendError::Closed(_)) = notify.try_send(bytes) {
                            return;
                        }
                    }
                    // Revoked: nothing more under this key.
                    None => subscription = None,
                },
            }
        }
    }
}
