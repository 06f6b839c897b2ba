//! The baseline of `relay`: a trivial forwarder that pairs connections and copies bytes both
//! ways, in this process, on the same runtime as the load generator. It does what a relay
//! cannot do less of (accept, read, write), and nothing a relay must do (handshakes, checking
//! `from`, routing by key, answering every message), so the flexim server's figures are also
//! given as a fraction of it: the ceiling of this machine and this load generator.
//!
//! Pairing: each connection first says which pair it belongs to (a 4-byte big-endian number:
//! the first bytes on TCP, the first binary message on WebSocket); the second connection with a
//! number is paired with the first, both are sent one byte (`1`) to say so, and from then on
//! everything one sends goes to the other. On TCP that is `tokio::io::copy_bidirectional`; on
//! WebSocket every binary message is forwarded as a binary message (tungstenite masks and
//! unmasks, as a WebSocket relay must).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _, TryStreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::load::Conn;

/// Connections waiting for their partner, by pair number.
type Waiting<T> = Arc<Mutex<HashMap<u32, T>>>;

/// A running forwarder; stops (and closes every connection) on drop.
pub struct Forwarder {
    /// Its address: `HOST:PORT` on TCP, `ws://HOST:PORT/` on WebSocket.
    pub addr: String,
    /// Whether it speaks WebSocket.
    websocket: bool,
    /// The accept loop; the copying tasks end when their sockets close.
    accept: JoinHandle<()>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Forwarder {
    /// Starts a forwarder on a free loopback port.
    pub async fn start(websocket: bool) -> anyhow::Result<Forwarder> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let accept = if websocket {
            tokio::spawn(accept_ws(listener))
        } else {
            tokio::spawn(accept_tcp(listener))
        };
        Ok(Forwarder {
            addr: if websocket {
                format!("ws://{local}/")
            } else {
                local.to_string()
            },
            websocket,
            accept,
        })
    }

    /// Opens one end of pair `pair` and waits until its partner is there too. Call it for
    /// both ends concurrently (or the first end, then the second: the first waits for the
    /// "paired" byte only once the second has connected, see [`Forwarder::connect_pair`]).
    async fn open(&self, pair: u32) -> anyhow::Result<Unpaired> {
        let stream =
            TcpStream::connect(self.addr.trim_start_matches("ws://").trim_end_matches('/'))
                .await
                .with_context(|| format!("connecting to the forwarder at {}", self.addr))?;
        // The same setting the client library uses for the relay.
        stream.set_nodelay(true)?;
        if self.websocket {
            let (mut ws, _) = tokio_tungstenite::client_async(self.addr.as_str(), stream).await?;
            ws.send(WsMessage::binary(pair.to_be_bytes().to_vec()))
                .await?;
            Ok(Unpaired::Ws(Box::new(ws)))
        } else {
            let mut stream = stream;
            stream.write_all(&pair.to_be_bytes()).await?;
            Ok(Unpaired::Tcp(stream))
        }
    }

    /// Opens both ends of pair `pair` and returns them once the forwarder has paired them.
    pub async fn connect_pair(&self, pair: u32) -> anyhow::Result<(Conn, Conn)> {
        let a = self.open(pair).await?;
        let b = self.open(pair).await?;
        Ok((a.paired().await?, b.paired().await?))
    }
}

/// A connection that announced its pair number and waits for the "paired" byte.
enum Unpaired {
    /// Raw TCP.
    Tcp(TcpStream),
    /// WebSocket.
    Ws(Box<WebSocketStream<TcpStream>>),
}

impl Unpaired {
    /// Waits for the forwarder's "paired" byte.
    async fn paired(self) -> anyhow::Result<Conn> {
        match self {
            Unpaired::Tcp(mut stream) => {
                let mut b = [0u8; 1];
                stream.read_exact(&mut b).await?;
                Ok(Conn::tcp_from(stream, &[], flexim_testkit::LARGE_READS))
            }
            Unpaired::Ws(mut ws) => match ws.next().await {
                Some(Ok(WsMessage::Binary(b))) if b.as_ref() == [1] => Ok(Conn::from_ws(*ws)),
                other => bail!("the forwarder did not pair the connection: {other:?}"),
            },
        }
    }
}

/// Accepts TCP connections and hands each to [`pair_tcp`].
async fn accept_tcp(listener: TcpListener) {
    let waiting: Waiting<TcpStream> = Arc::default();
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(pair_tcp(stream, waiting.clone()));
    }
}

/// Reads the pair number; the first of a pair waits in `waiting`, the second copies.
async fn pair_tcp(mut stream: TcpStream, waiting: Waiting<TcpStream>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut id = [0u8; 4];
    stream.read_exact(&mut id).await?;
    let id = u32::from_be_bytes(id);
    let partner = {
        let mut w = waiting.lock().expect("the pairing map is never poisoned");
        match w.remove(&id) {
            Some(p) => p,
            None => {
                w.insert(id, stream);
                return Ok(());
            }
        }
    };
    let (mut a, mut b) = (partner, stream);
    a.write_all(&[1]).await?;
    b.write_all(&[1]).await?;
    tokio::io::copy_bidirectional(&mut a, &mut b).await?;
    Ok(())
}

/// Accepts WebSocket connections and hands each to [`pair_ws`].
async fn accept_ws(listener: TcpListener) {
    let waiting: Waiting<WebSocketStream<TcpStream>> = Arc::default();
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(pair_ws(stream, waiting.clone()));
    }
}

/// The WebSocket twin of [`pair_tcp`]: forwards binary messages both ways.
async fn pair_ws(
    stream: TcpStream,
    waiting: Waiting<WebSocketStream<TcpStream>>,
) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    let id = match ws.next().await {
        Some(Ok(WsMessage::Binary(b))) if b.len() == 4 => {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        }
        other => bail!("expected a pair number, got {other:?}"),
    };
    let partner = {
        let mut w = waiting.lock().expect("the pairing map is never poisoned");
        match w.remove(&id) {
            Some(p) => p,
            None => {
                w.insert(id, ws);
                return Ok(());
            }
        }
    };
    let (mut a, mut b) = (partner, ws);
    a.send(WsMessage::binary(vec![1])).await?;
    b.send(WsMessage::binary(vec![1])).await?;
    let (a_tx, a_rx) = a.split();
    let (b_tx, b_rx) = b.split();
    // `forward` feeds every message it can take without waiting and flushes only when its
    // source has nothing more ready: many messages per write, as a relay would batch them.
    let binary = |m: &WsMessage| std::future::ready(m.is_binary());
    let one = a_rx.try_filter(binary).forward(b_tx);
    let other = b_rx.try_filter(binary).forward(a_tx);
    let (r1, r2) = tokio::join!(one, other);
    r1?;
    r2?;
    Ok(())
}
