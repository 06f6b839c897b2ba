//! The raw TCP transport: header check, then frames through the shared session driver.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use flexim_protocol::HEADER;
use flexim_protocol::frame::{self, FrameError};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::codec::{BytesCodec, FramedWrite};

use crate::relay::{Metrics, Relay};
use crate::session::{self, Inbound};

/// Accepts connections until shutdown, one task per connection.
pub async fn serve(listener: TcpListener, relay: Arc<Relay>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                Metrics::inc(&relay.metrics.connections_total);
                let relay = relay.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let end = handle(stream, relay, shutdown).await;
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

async fn handle(
    mut stream: TcpStream,
    relay: Arc<Relay>,
    shutdown: watch::Receiver<bool>,
) -> Option<session::End> {
    let timeout = relay.limits.header_timeout;
    if !matches!(
        tokio::time::timeout(timeout, read_header(&mut stream)).await,
        Ok(true)
    ) {
        reset(stream);
        return None;
    }
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut inbound = Box::pin(frames(FrameReader::new(read, relay.limits.max_body)));
    // No write buffer kept per connection: frames are written as they come (many per write
    // under load, since the session feeds several before flushing), and an idle connection
    // holds no 8 KiB buffer (tokio-util's default), which is most of its memory.
    let mut outbound = FramedWrite::with_capacity(write, BytesCodec::new(), 0);
    Some(session::run(relay, &mut inbound, &mut outbound, shutdown).await)
}

/// Bytes of read buffer an idle TCP connection keeps.
const IDLE_READ: usize = 512;
/// Bytes read at once while frames keep coming.
const READ_CHUNK: usize = 8192;

/// Owns the read half and its buffer; turns bytes into frames (check, then split).
pub struct FrameReader<R> {
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
    pub fn new(reader: R, max_body: usize) -> Self {
        FrameReader {
            reader,
            buf: BytesMut::new(),
            max_body,
            skip: 0,
            eof: false,
        }
    }

    /// The next frame or framing problem; `None` at the end of input or on a read error.
    pub async fn next(&mut self) -> Option<Inbound> {
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
pub fn frames<R: AsyncRead + Unpin>(reader: FrameReader<R>) -> impl Stream<Item = Inbound> {
    futures_util::stream::unfold(
        reader,
        |mut r| async move { r.next().await.map(|i| (i, r)) },
    )
}
