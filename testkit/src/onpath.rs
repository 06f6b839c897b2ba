//! An attacker on the path: a TCP relay between one client and the server that records every
//! byte both ways, and on command cuts the client off and hands the attacker the server's side
//! of the connection, logged in as the client.
//!
//! It works below any protocol (raw TCP or a WebSocket upgrade pass through it alike), which is
//! where a real on-path attacker sits: a hostile Wi-Fi, a compromised router, a TLS-terminating
//! proxy that turned.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// What went through the relay, per direction.
#[derive(Debug, Default, Clone)]
pub struct Capture {
    /// Every byte the client sent.
    pub up: Vec<u8>,
    /// Every byte the server sent.
    pub down: Vec<u8>,
}

/// One relayed connection (see the module documentation).
pub struct OnPath {
    /// Where the client connects instead of the server.
    pub addr: SocketAddr,
    /// What went through so far.
    capture: Arc<Mutex<Capture>>,
    /// Tells both directions to stop forwarding.
    cut: watch::Sender<bool>,
    /// The server's side of the connection, once the client connected.
    upstream: Option<oneshot::Receiver<(JoinHandle<OwnedReadHalf>, JoinHandle<OwnedWriteHalf>)>>,
}

/// Copies `from` to `to`, recording into `record`, until the end or the cut; gives back the
/// half the attacker keeps.
async fn pump<K>(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    capture: Arc<Mutex<Capture>>,
    up: bool,
    mut cut: watch::Receiver<bool>,
    keep: impl FnOnce(OwnedReadHalf, OwnedWriteHalf) -> K,
) -> K {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            _ = cut.wait_for(|c| *c) => break,
            n = from.read(&mut buf) => n,
        };
        let n = match n {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                // Wait for the cut so that the attacker still gets its half.
                let _ = cut.wait_for(|c| *c).await;
                break;
            }
            Ok(n) => n,
        };
        {
            let mut c = capture.lock().unwrap();
            let side = if up { &mut c.up } else { &mut c.down };
            side.extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            let _ = cut.wait_for(|c| *c).await;
            break;
        }
    }
    keep(from, to)
}

impl OnPath {
    /// Listens for one client and relays it to `server`.
    pub async fn start(server: SocketAddr) -> Result<OnPath> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let capture = Arc::new(Mutex::new(Capture::default()));
        let (cut, cut_rx) = watch::channel(false);
        let (tx, rx) = oneshot::channel();
        let cap = capture.clone();
        tokio::spawn(async move {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let Ok(upstream) = TcpStream::connect(server).await else {
                return;
            };
            let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            // Client to server: the attacker keeps the write half towards the server.
            let up = tokio::spawn(pump(cr, uw, cap.clone(), true, cut_rx.clone(), |_, w| w));
            // Server to client: the attacker keeps the read half from the server.
            let down = tokio::spawn(pump(ur, cw, cap, false, cut_rx, |r, _| r));
            let _ = tx.send((down, up));
        });
        Ok(OnPath {
            addr,
            capture,
            cut,
            upstream: Some(rx),
        })
    }

    /// What went through so far.
    pub fn capture(&self) -> Capture {
        self.capture.lock().unwrap().clone()
    }

    /// Cuts the client off: nothing more goes either way, and the attacker gets the server's
    /// side of the connection, still logged in as the client.
    pub async fn hijack(&mut self) -> Result<TcpStream> {
        let _ = self.cut.send(true);
        let (down, up) = self
            .upstream
            .take()
            .context("hijacked already")?
            .await
            .context("no client connected through the relay")?;
        let (read, write) = (down.await?, up.await?);
        Ok(read.reunite(write)?)
    }
}
