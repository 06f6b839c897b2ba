//! The HTTP listeners' accept loop: TLS when configured, then HTTP/1.1 with a deadline for
//! every request head, and the router on each connection.
//!
//! hyper is driven directly rather than through `axum::serve`, for the deadlines: axum's
//! server sets no timer, so a client that connects and sends nothing (or half a request) holds
//! its socket for as long as it likes. Here the TLS handshake has [`Limits::http_timeout`]
//! and so has each request head (hyper's `header_read_timeout`, which also closes idle
//! kept-alive connections); an upgraded WebSocket is out of hyper's hands and not affected.
//!
//! [`Limits::http_timeout`]: crate::Limits::http_timeout

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::task::TaskTracker;

use crate::tls::TlsSlot;
use tower_service::Service as _;

/// One HTTP listener: where it accepts, what it serves, with TLS or without.
pub(crate) struct HttpListener {
    /// The bound socket.
    pub(crate) listener: TcpListener,
    /// The router every connection gets.
    pub(crate) router: Router,
    /// TLS, when the listener speaks https: its configuration now (a reload replaces it).
    pub(crate) tls: Option<Arc<TlsSlot>>,
    /// The deadline for the TLS handshake and for each request head.
    pub(crate) timeout: Duration,
}

impl HttpListener {
    /// Accepts connections until `stop` turns true, then asks each open HTTP connection to
    /// finish its request and close, and returns once they all have.
    pub(crate) async fn serve(self, mut stop: watch::Receiver<bool>) {
        let connections = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                a = self.listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Frames are small and a session already writes what it has in one go: Nagle's
            // delay (40 ms with delayed ACKs) would only add latency, as on the TCP side.
            let _ = tcp.set_nodelay(true);
            let (router, tls, timeout) = (self.router.clone(), self.tls.clone(), self.timeout);
            let stop = stop.clone();
            connections.spawn(async move {
                match tls {
                    None => serve_connection(tcp, peer, router, timeout, stop).await,
                    Some(tls) => {
                        let tls = tls.acceptor();
                        if let Some(stream) =
                            accept_tls(&tls, tcp, peer, timeout, stop.clone()).await
                        {
                            serve_connection(stream, peer, router, timeout, stop).await;
                        }
                    }
                }
            });
        }
        connections.close();
        connections.wait().await;
    }
}

/// The TLS handshake on a connection just accepted, within `timeout` and not past shutdown;
/// `None` if it failed, was late or was cut short.
async fn accept_tls(
    tls: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> Option<TlsStream<TcpStream>> {
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(timeout, tls.accept(tcp)) => accepted,
        _ = stop.wait_for(|s| *s) => return None,
    };
    match accepted {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "no TLS handshake in time");
            None
        }
    }
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until the client closes it, a request
/// head is late, or the server stops (then the request being answered is finished first).
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Handlers learn the peer's address as axum's `ConnectInfo`, as `axum::serve` would
    // provide it. axum's Router is always ready (its `poll_ready` returns `Ready`), so it is
    // called without waiting for readiness.
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().call(request)
    });
    let mut connection = pin!(
        http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
    );
    let ended = tokio::select! {
        ended = connection.as_mut() => Some(ended),
        // The guard `wait_for` returns must not live across the await below.
        _ = stop.wait_for(|s| *s) => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "http connection ended");
    }
}
