//! The raw TCP transport: header check, then frames through the shared session driver.

use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use flexim_protocol::HEADER;
use flexim_protocol::frame::{self, FrameError};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::codec::{BytesCodec, FramedWrite};

use crate::conns::{Connections, Refusal, Slot};
use crate::metrics;
use crate::relay::Relay;
use crate::session::{self, Inbound};

/// Accepts connections until shutdown, one task per connection.
pub(crate) async fn serve(
    listener: TcpListener,
    relay: Arc<Relay>,
    conns: Arc<Connections>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                metrics::inc(&relay.metrics.connections_total);
                let slot = conns
                    .admit(peer.ip())
                    .map_err(|why| (why, conns.refusal(why)));
                let relay = relay.clone();
                let shutdown = shutdown.clone();
                conns.spawn(async move {
                    let end = handle(stream, relay, slot, shutdown).await;
                    tracing::debug!(%peer, ?end, "tcp connection closed");
                });
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Aborts a connection with a TCP RST (SO_LINGER 0), as the protocol asks for a bad header.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Reads the 5-byte header, giving up at the first wrong byte.
async fn read_header(stream: &mut TcpStream) -> bool {
    let mut got = [0u8; 5];
    let mut n = 0;
    while n < HEADER.len() {
        match stream.read(&mut got[n..]).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => {
                n += k;
                if got[..n] != HEADER[..n] {
                    return false;
                }
            }
        }
    }
    true
}

/// Serves one connection: the header, then the session; or, without a slot, the header and
/// the refusal (why, and its framed Status).
async fn handle(
    mut stream: TcpStream,
    relay: Arc<Relay>,
    slot: Result<Slot, (Refusal, Bytes)>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<session::End> {
    let timeout = relay.limits.header_timeout;
    let header = tokio::select! {
        ok = tokio::time::timeout(timeout, read_header(&mut stream)) => matches!(ok, Ok(true)),
        // A connection that has not sent its header yet is no session to tell: it is reset.
        _ = shutdown.wait_for(|stop| *stop) => false,
    };
    if !header {
        reset(stream);
        return None;
    }
    let _slot = match slot {
        Ok(slot) => slot,
        Err((why, refusal)) => {
            relay.metrics.connection_refused(why);
            // Best effort, briefly: the client is told why, then the connection closes.
            let _ = tokio::time::timeout(timeout, async {
                stream.write_all(&refusal).await?;
                stream.shutdown().await?;
                // Read what the client still sends until it closes: closing with unread bytes
                // would reset the connection, and a reset may destroy the Status unread.
                let mut sink = [0u8; 512];
                while stream.read(&mut sink).await? > 0 {}
                Ok::<_, std::io::Error>(())
            })
            .await;
            return None;
        }
    };
    let _ = stream.set_nodelay(true);
    tune(&stream, &relay.limits);
    let peer = match stream.peer_addr() {
        Ok(a) => a.ip(),
        Err(_) => return None,
    };
    let (read, write) = stream.into_split();
    let mut inbound = Box::pin(frames(FrameReader::new(read, crate::config::RECORD_BODY)));
    let outbound = Writer::new(write);
    Some(session::run(relay, (peer, "tcp"), &mut inbound, outbound, shutdown).await)
}

/// Keepalive and the user timeout on a FLEX connection ([`crate::config::Limits`]): a peer
/// that vanished is found by the kernel. Best effort: a socket that refuses them still serves.
pub(crate) fn tune(stream: &TcpStream, limits: &crate::config::Limits) {
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(limits.tcp_keepalive)
        .with_interval(limits.tcp_keepalive);
    if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "TCP keepalive not set");
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = sock.set_tcp_user_timeout(Some(limits.tcp_user_timeout)) {
        tracing::debug!(error = %e, "TCP_USER_TIMEOUT not set");
    }
}

/// Bytes of queued frames written out together before more are accepted.
const WRITE_BATCH: usize = 8 * 1024;

/// Bytes of read buffer an idle TCP connection keeps.
const IDLE_READ: usize = 512;
/// Bytes read at once while frames keep coming.
const READ_CHUNK: usize = 8192;

/// The write side of a TCP connection: frames fed between two flushes go out in one write,
/// and the buffer that gathered them is given back after each flush, so an idle connection
/// holds no write buffer (tokio-util's default keeps 8 KiB for every connection).
pub(crate) struct Writer<W> {
    /// Frames gathered for the next write.
    inner: FramedWrite<W, BytesCodec>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// A writer with no buffer yet.
    pub(crate) fn new(write: W) -> Self {
        let mut inner = FramedWrite::with_capacity(write, BytesCodec::new(), 0);
        // With the capacity as the boundary, an empty buffer would write every frame on its
        // own: one system call per frame.
        inner.set_backpressure_boundary(WRITE_BATCH);
        Writer { inner }
    }
}

impl<W: AsyncWrite + Unpin> Sink<Bytes> for Writer<W> {
    type Error = std::io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Sink::<Bytes>::poll_ready(Pin::new(&mut self.inner), cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), Self::Error> {
        Sink::<Bytes>::start_send(Pin::new(&mut self.inner), item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let done = ready!(Sink::<Bytes>::poll_flush(Pin::new(&mut self.inner), cx));
        let buf = self.inner.write_buffer_mut();
        if buf.is_empty() && buf.capacity() > 0 {
            *buf = BytesMut::new();
        }
        Poll::Ready(done)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Sink::<Bytes>::poll_close(Pin::new(&mut self.inner), cx)
    }
}

/// Owns the read half and its buffer; turns bytes into frames (check, then split).
pub(crate) struct FrameReader<R> {
    /// The socket's read half.
    reader: R,
    /// Bytes read but not yet framed.
    buf: BytesMut,
    /// The body limit; longer frames are skipped.
    max_body: usize,
    /// Bytes of an oversized frame still to throw away as they arrive.
    skip: usize,
    /// The peer closed its side.
    eof: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader with an empty buffer.
    pub(crate) fn new(reader: R, max_body: usize) -> Self {
        FrameReader {
            reader,
            buf: BytesMut::new(),
            max_body,
            skip: 0,
            eof: false,
        }
    }

    /// The next frame or framing problem; `None` at the end of input or on a read error.
    pub(crate) async fn next(&mut self) -> Option<Inbound> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len());
                let _ = self.buf.split_to(n);
                self.skip -= n;
            }
            if self.skip == 0 {
                match frame::check(&self.buf, self.max_body) {
                    Ok(Some(info)) => {
                        return Some(Inbound::Frame(self.buf.split_to(info.total()).freeze()));
                    }
                    Ok(None) => {}
                    Err(e @ FrameError::TooLarge { len, .. }) => {
                        self.skip = frame::PREFIX_LEN + len;
                        return Some(Inbound::Bad(e));
                    }
                    Err(e) => return Some(Inbound::Bad(e)),
                }
            }
            if self.eof {
                if self.skip == 0 && !self.buf.is_empty() {
                    let error = frame::truncated(&self.buf);
                    self.buf.clear();
                    return Some(Inbound::Bad(error));
                }
                return None;
            }
            if self.buf.is_empty() && self.buf.capacity() > IDLE_READ {
                // Nothing half-read: let the big buffer go (the frames cut from it keep only
                // what they use) and wait with a small one, so an idle connection holds
                // IDLE_READ bytes instead of a burst's worth.
                self.buf = BytesMut::with_capacity(IDLE_READ);
            } else if self.buf.capacity() - self.buf.len() < 256 {
                // Under load: read many frames per system call.
                self.buf.reserve(READ_CHUNK);
            }
            match self.reader.read_buf(&mut self.buf).await {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

/// The reader as a `Stream`. Cancel-safe: an unfinished read stays inside the stream.
pub(crate) fn frames<R: AsyncRead + Unpin>(reader: FrameReader<R>) -> impl Stream<Item = Inbound> {
    futures_util::stream::unfold(
        reader,
        |mut r| async move { r.next().await.map(|i| (i, r)) },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `tune` sets is what the kernel then holds for the connection.
    #[tokio::test]
    async fn accepted_connections_get_keepalive_and_the_user_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let limits = crate::config::Limits {
            tcp_keepalive: Duration::from_secs(42),
            tcp_user_timeout: Duration::from_secs(17),
            ..Default::default()
        };
        tune(&stream, &limits);
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(42));
        #[cfg(target_os = "linux")]
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(17))
        );
    }
}
