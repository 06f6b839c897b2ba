//! The byte transports under the engine: raw TCP (a byte stream) and WebSocket (one frame per
//! binary message), the latter also over TLS. They move bytes only; the engine
//! (`flexim-session`) frames and parses.
//!
//! Both halves are built to be cancel-safe, because [`Transport::recv`] runs inside
//! `tokio::select!` next to stdin and may be dropped at any await point:
//! - Incoming bytes are kept in the struct (the TCP read buffer, or tungstenite's own state), so
//!   a dropped `recv` loses nothing.
//! - Outgoing bytes are first queued in the struct (synchronously) and then flushed. A dropped
//!   flush leaves the rest in the queue, and every later `flush`/`recv` flushes it first, so a
//!   frame is never cut in half on the wire and never silently lost.

use std::collections::VecDeque;
use std::future::poll_fn;

use bytes::{Buf as _, BytesMut};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::endpoint::Endpoint;
use crate::error::ClientError;
use crate::tls::{self, Trust};

/// Bytes read from a TCP socket at once: many frames per system call under load.
const READ_CHUNK: usize = 8 * 1024;

/// A connection to a server: bytes out, bytes in.
pub struct Transport {
    /// The socket and its buffers.
    inner: Inner,
}

/// The transports.
enum Inner {
    /// Raw TCP.
    Tcp {
        /// The socket.
        stream: TcpStream,
        /// The read buffer, kept between reads so that it is not allocated for each.
        rbuf: BytesMut,
        /// Bytes queued for writing but not yet accepted by the socket.
        wbuf: BytesMut,
    },
    /// WebSocket, one frame per binary message.
    Ws {
        /// The WebSocket. Boxed because tungstenite's state is large and this enum is moved
        /// around with the client.
        ws: Box<WebSocketStream<TcpStream>>,
        /// Messages queued for sending but not yet handed to the WebSocket.
        outbox: VecDeque<WsMessage>,
    },
    /// WebSocket over TLS, as [`Inner::Ws`].
    Wss {
        /// The WebSocket on the TLS stream, boxed as in [`Inner::Ws`].
        ws: Box<WebSocketStream<TlsStream<TcpStream>>>,
        /// Messages queued for sending but not yet handed to the WebSocket.
        outbox: VecDeque<WsMessage>,
    },
}

impl Transport {
    /// Opens the connection (TCP, then the HTTP upgrade for WebSocket). Sends nothing else:
    /// the caller sends the header, so that tests can also send a wrong one.
    pub async fn connect(endpoint: &Endpoint) -> Result<Transport, ClientError> {
        let stream = TcpStream::connect(endpoint.socket_addr())
            .await
            .map_err(|error| ClientError::Connect {
                endpoint: endpoint.to_string(),
                error,
            })?;
        // Datums are small and interactive; waiting to coalesce them only adds latency.
        let _ = stream.set_nodelay(true);
        let inner = match endpoint {
            Endpoint::Tcp { .. } => Inner::Tcp {
                stream,
                rbuf: BytesMut::with_capacity(READ_CHUNK),
                wbuf: BytesMut::new(),
            },
            Endpoint::WebSocket { url, tls: None, .. } => Inner::Ws {
                ws: Box::new(upgrade(url, stream).await?),
                outbox: VecDeque::new(),
            },
            Endpoint::WebSocket {
                url,
                tls: Some(trust),
                ..
            } => Inner::Wss {
                ws: Box::new(upgrade(url, handshake(endpoint, url, trust, stream).await?).await?),
                outbox: VecDeque::new(),
            },
        };
        Ok(Transport { inner })
    }

    /// Whether this is a WebSocket connection (over TLS or not).
    pub fn is_websocket(&self) -> bool {
        matches!(self.inner, Inner::Ws { .. } | Inner::Wss { .. })
    }

    /// Queues bytes for sending without waiting: on TCP they go onto the stream as they are,
    /// on WebSocket they form one binary message. Once queued they are committed: they go out
    /// whole with the next [`Transport::flush`] or [`Transport::recv`].
    pub fn queue(&mut self, bytes: Vec<u8>) {
        match &mut self.inner {
            Inner::Tcp { wbuf, .. } => wbuf.extend_from_slice(&bytes),
            Inner::Ws { outbox, .. } | Inner::Wss { outbox, .. } => {
                outbox.push_back(WsMessage::binary(bytes))
            }
        }
    }

    /// Whether bytes are queued and not written yet.
    pub fn has_queued(&self) -> bool {
        match &self.inner {
            Inner::Tcp { wbuf, .. } => wbuf.has_remaining(),
            Inner::Ws { outbox, .. } | Inner::Wss { outbox, .. } => !outbox.is_empty(),
        }
    }

    /// Writes everything queued. Cancel-safe: what was not written stays queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        match &mut self.inner {
            Inner::Tcp { stream, wbuf, .. } => {
                while wbuf.has_remaining() {
                    // `write_buf` advances `wbuf` only by what the socket accepted.
                    let n = stream.write_buf(wbuf).await?;
                    if n == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
                    }
                }
                Ok(())
            }
            Inner::Ws { ws, outbox } => flush_ws(ws, outbox).await,
            Inner::Wss { ws, outbox } => flush_ws(ws, outbox).await,
        }
    }

    /// Receives what the server sent next: on TCP whatever bytes arrived (frames cut
    /// anywhere), on WebSocket one binary message. `Ok(None)` when the server closed the
    /// connection. Queued output goes first, since the caller may wait for the answer to it.
    ///
    /// Cancel-safe: a read that is dropped loses nothing (tokio's `read_buf` and tungstenite
    /// keep partial input), and unsent output stays queued.
    pub async fn recv(&mut self) -> Result<Option<BytesMut>, ClientError> {
        self.flush().await?;
        match &mut self.inner {
            Inner::Tcp { stream, rbuf, .. } => {
                if rbuf.capacity() - rbuf.len() < 1024 {
                    rbuf.reserve(READ_CHUNK);
                }
                if stream.read_buf(rbuf).await? == 0 {
                    return Ok(None);
                }
                Ok(Some(rbuf.split()))
            }
            Inner::Ws { ws, .. } => recv_ws(ws).await,
            Inner::Wss { ws, .. } => recv_ws(ws).await,
        }
    }

    /// Closes the connection politely (a WebSocket close frame, or a TCP shutdown).
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.flush().await?;
        match &mut self.inner {
            Inner::Tcp { stream, .. } => stream.shutdown().await?,
            // Sending the close frame through the Sink is the same call with any feature set of
            // tokio-tungstenite (its inherent `close` is not).
            Inner::Ws { ws, .. } => ws.send(WsMessage::Close(None)).await?,
            Inner::Wss { ws, .. } => ws.send(WsMessage::Close(None)).await?,
        }
        Ok(())
    }
}

/// The TLS handshake for a `wss://` endpoint, checking the server's certificate against
/// `trust` and the URL's host.
async fn handshake(
    endpoint: &Endpoint,
    url: &str,
    trust: &Trust,
    stream: TcpStream,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let tls_error = |error| ClientError::Tls {
        url: url.to_string(),
        error,
    };
    let name = tls::server_name(endpoint.host()).map_err(tls_error)?;
    TlsConnector::from(trust.client_config())
        .connect(name, stream)
        .await
        .map_err(tls_error)
}

/// The WebSocket upgrade at `url` on a connection just opened (TCP, or TLS over it).
async fn upgrade<S>(url: &str, stream: S) -> Result<WebSocketStream<S>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (ws, _response) = tokio_tungstenite::client_async(url, stream)
        .await
        // The connection is up, so whatever fails now (a 404, a reset by a server that does
        // not speak HTTP) is the upgrade's failure.
        .map_err(|error| ClientError::Upgrade {
            url: url.to_string(),
            error: Box::new(error),
        })?;
    Ok(ws)
}

/// [`Transport::flush`] for a WebSocket, over TLS or not.
async fn flush_ws<S>(
    ws: &mut WebSocketStream<S>,
    outbox: &mut VecDeque<WsMessage>,
) -> Result<(), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while !outbox.is_empty() {
        // Wait for room first and only then take the message out of the queue, so that a
        // cancellation while waiting loses nothing.
        poll_fn(|cx| ws.poll_ready_unpin(cx)).await?;
        if let Some(msg) = outbox.pop_front() {
            ws.start_send_unpin(msg)?;
        }
    }
    ws.flush().await?;
    Ok(())
}

/// [`Transport::recv`] for a WebSocket, over TLS or not.
async fn recv_ws<S>(ws: &mut WebSocketStream<S>) -> Result<Option<BytesMut>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Ok(WsMessage::Binary(bytes))) => return Ok(Some(BytesMut::from(&bytes[..]))),
            Some(Ok(WsMessage::Text(_))) => return Err(ClientError::TextMessage),
            // The close frame's code and reason are not needed: the server sends any
            // explanation as a Status datum before closing.
            Some(Ok(WsMessage::Close(_))) => return Ok(None),
            // tungstenite answers pings by itself.
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                return match ClientError::from(e) {
                    ClientError::Closed => Ok(None),
                    // The server dropped the TCP connection without a close frame; for the
                    // user that is the same as a close.
                    ClientError::WebSocket(e)
                        if matches!(
                            *e,
                            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
                        ) =>
                    {
                        Ok(None)
                    }
                    other => Err(other),
                };
            }
        }
    }
}
