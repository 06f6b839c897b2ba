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
//!
//! With `linked`, it is the **crypto forwarder**, the baseline that costs what the link must
//! cost: after pairing, each connection logs in to the forwarder with the client engine over
//! the real Noise handshake (the forwarder answers as a server would, with a key of its own),
//! and from then on the forwarder opens every record from one end and seals it again for the
//! other, as the relay does, and does nothing else (no routing, no answers).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _, TryStreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use std::future::poll_fn;
use std::task::Poll;

use flexim_client::protocol::handshake::ServerHandshake;
use flexim_client::protocol::{Datum, SecretKey, User};

use crate::load::Conn;

/// Connections waiting for their partner, by pair number.
type Waiting<T> = Arc<Mutex<HashMap<u32, T>>>;

/// A running forwarder; stops (and closes every connection) on drop.
pub struct Forwarder {
    /// Its address: `HOST:PORT` on TCP, `ws://HOST:PORT/` on WebSocket.
    pub addr: String,
    /// Whether it speaks WebSocket.
    websocket: bool,
    /// Whether it terminates the Noise link on both sides (the crypto forwarder).
    linked: bool,
    /// The accept loop; the copying tasks end when their sockets close.
    accept: JoinHandle<()>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Forwarder {
    /// Starts a forwarder on a free loopback port: a byte forwarder, or with `linked` the
    /// crypto forwarder (see the module documentation).
    pub async fn start(websocket: bool, linked: bool) -> anyhow::Result<Forwarder> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let key = linked.then(|| Arc::new(flexim_testkit::new_key()));
        let accept = if websocket {
            tokio::spawn(accept_ws(listener, key))
        } else {
            tokio::spawn(accept_tcp(listener, key))
        };
        Ok(Forwarder {
            addr: if websocket {
                format!("ws://{local}/")
            } else {
                local.to_string()
            },
            websocket,
            linked,
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

    /// Opens both ends of pair `pair` and returns them once the forwarder has paired them
    /// (and, for the crypto forwarder, once both have logged in to it with the engine).
    pub async fn connect_pair(&self, pair: u32) -> anyhow::Result<(Conn, Conn)> {
        let a = self.open(pair).await?;
        let b = self.open(pair).await?;
        let (mut a, mut b) = (a.paired().await?, b.paired().await?);
        if self.linked {
            let (ka, kb) = (flexim_testkit::new_key(), flexim_testkit::new_key());
            let (la, lb) = tokio::join!(a.login(&ka), b.login(&kb));
            la.context("logging in to the crypto forwarder")?;
            lb.context("logging in to the crypto forwarder")?;
        }
        Ok((a, b))
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
async fn accept_tcp(listener: TcpListener, key: Option<Arc<SecretKey>>) {
    let waiting: Waiting<TcpStream> = Arc::default();
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(pair_tcp(stream, waiting.clone(), key.clone()));
    }
}

/// Reads the pair number; the first of a pair waits in `waiting`, the second copies (or,
/// with a key, terminates the link on both and forwards the datums).
async fn pair_tcp(
    mut stream: TcpStream,
    waiting: Waiting<TcpStream>,
    key: Option<Arc<SecretKey>>,
) -> anyhow::Result<()> {
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
    let Some(key) = key else {
        tokio::io::copy_bidirectional(&mut a, &mut b).await?;
        return Ok(());
    };
    let mut header = [0u8; 5];
    a.read_exact(&mut header).await?;
    b.read_exact(&mut header).await?;
    let large = flexim_testkit::LARGE_READS;
    let (a, b) = (Conn::tcp_from(a, &[], large), Conn::tcp_from(b, &[], large));
    crypto_forward(a, b, &key).await
}

/// Accepts WebSocket connections and hands each to [`pair_ws`].
async fn accept_ws(listener: TcpListener, key: Option<Arc<SecretKey>>) {
    let waiting: Waiting<WebSocketStream<TcpStream>> = Arc::default();
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(pair_ws(stream, waiting.clone(), key.clone()));
    }
}

/// The WebSocket twin of [`pair_tcp`]: forwards binary messages both ways.
async fn pair_ws(
    stream: TcpStream,
    waiting: Waiting<WebSocketStream<TcpStream>>,
    key: Option<Arc<SecretKey>>,
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
    if let Some(key) = key {
        let (mut a, mut b) = (Conn::from_ws(a), Conn::from_ws(b));
        // The header is each end's first message.
        a.next_wire().await?.ok().context("no header")?;
        b.next_wire().await?.ok().context("no header")?;
        return crypto_forward(a, b, &key).await;
    }
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

/// The forwarder's side of one login (docs/PROTOCOL.md §6): its introduction, Noise messages 1
/// to 3, then the client's User datum as the first record; the connection keeps the link.
async fn accept_login(conn: &mut Conn, key: &SecretKey) -> anyhow::Result<()> {
    let hello = Datum::User(User {
        aliases: vec!["forwarder".into()],
        key: key.public_key(),
        last_seen: 0,
        online: None,
    })
    .to_frame()?;
    conn.send_bytes(&hello).await?;
    let Datum::Command(auth) = conn.recv().await? else {
        bail!("expected AUTH");
    };
    let mut ephemeral = [0u8; 32];
    flexim_testkit::random(&mut ephemeral);
    let (pending, challenge) = ServerHandshake::start(key, &hello, &auth, ephemeral, 0)?;
    conn.send(&Datum::Auth(challenge)).await?;
    let Datum::AuthResponse(response) = conn.recv().await? else {
        bail!("expected AuthResponse");
    };
    let (client, link) = pending.finish(&response)?;
    conn.adopt_link(Some(link));
    let me = User {
        aliases: vec![],
        key: client,
        last_seen: 0,
        online: Some(true),
    };
    conn.send(&Datum::User(me)).await
}

/// Logs both ends in, then moves every datum from one to the other: each record opened with
/// one end's link and sealed again with the other's (the kit's connection does both in its
/// polling face), many per system call, until either end closes.
async fn crypto_forward(mut a: Conn, mut b: Conn, key: &SecretKey) -> anyhow::Result<()> {
    let (la, lb) = tokio::join!(accept_login(&mut a, key), accept_login(&mut b, key));
    la?;
    lb?;
    // Frames opened from one end and not yet taken by the other, per direction.
    let mut to_b: Vec<Vec<u8>> = Vec::new();
    let mut to_a: Vec<Vec<u8>> = Vec::new();
    poll_fn(|cx| -> Poll<std::io::Result<()>> {
        let closed =
            shuttle(cx, &mut a, &mut b, &mut to_b)? || shuttle(cx, &mut b, &mut a, &mut to_a)?;
        if closed {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await?;
    Ok(())
}

/// One direction of [`crypto_forward`]: what `from` has ready, opened, goes to `to`, sealed;
/// true once `from` closed.
fn shuttle(
    cx: &mut std::task::Context<'_>,
    from: &mut Conn,
    to: &mut Conn,
    queue: &mut Vec<Vec<u8>>,
) -> std::io::Result<bool> {
    let closed = from.poll_frames(cx, |kind, body| {
        let mut f = Vec::with_capacity(3 + body.len());
        let _ = flexim_client::protocol::frame::encode_into(kind, body, &mut f);
        queue.push(f);
    })?;
    // Called with nothing queued too: it writes what an earlier call left in the socket's
    // buffer.
    let taken = to.poll_send(cx, queue.len() as u64, |i, out| {
        out.extend_from_slice(&queue[i as usize]);
    })?;
    queue.drain(..taken as usize);
    Ok(closed)
}
