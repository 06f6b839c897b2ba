//! The flexim server: one relay core fed by a TCP transport and a WebSocket transport.
//!
//! `main` and the tests use the same two calls: [`Server::bind`] then [`Server::run`].
//! See `ARCHITECTURE.md` for the map and the invariants.

pub mod config;
pub mod http;
pub mod keyfile;
pub mod relay;
pub mod session;
pub mod store;
pub mod tcp;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flexim_protocol::PublicKey;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{Config, Limits};
use relay::Relay;
use store::EmbeddedStore;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server key could not be read or made.
    #[error(transparent)]
    Key(#[from] keyfile::KeyFileError),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] store::StoreError),
}

/// A bound, not yet running server.
pub struct Server {
    /// The TCP listener, bound (port 0 resolved).
    tcp: TcpListener,
    /// The HTTP listener, bound.
    http: TcpListener,
    /// The shared core.
    relay: Arc<Relay>,
    /// Where the browser client's files are.
    static_dir: std::path::PathBuf,
    /// Whether the server key was made by this start (a fresh data directory).
    pub new_key: bool,
}

/// Deletes expired stored messages now and then, for as long as the server runs.
async fn sweep(relay: Arc<Relay>, retention: Duration) {
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        relay.expire(retention).await;
        tokio::time::sleep(every).await;
    }
}

impl Server {
    /// Creates the data directory, loads or makes the key, opens the store and binds both
    /// listeners. Nothing is served until [`Server::run`].
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        std::fs::create_dir_all(&config.data).map_err(|source| StartError::DataDir {
            path: config.data.display().to_string(),
            source,
        })?;
        let (key, new_key) = keyfile::load_or_create(&config.data.join("server.key"))?;
        let store = EmbeddedStore::open(&config.data.join("flexim.redb"))?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let tcp = bind(config.tcp).await?;
        let http = bind(config.http).await?;
        let relay = Arc::new(Relay::new(
            key,
            &config.name,
            Arc::new(store),
            config.limits,
        ));
        Ok(Server {
            tcp,
            http,
            relay,
            static_dir: config.static_dir,
            new_key,
        })
    }

    /// The bound TCP address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp.local_addr().expect("bound socket has an address")
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound socket has an address")
    }

    /// The server's public key.
    pub fn public_key(&self) -> PublicKey {
        self.relay.public_key()
    }

    /// Serves both transports until `shutdown` completes, then tells every session, waits
    /// briefly for them to close, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let tcp = tokio::spawn(tcp::serve(self.tcp, self.relay.clone(), stop_rx.clone()));
        let router = http::app(
            http::AppState {
                relay: self.relay.clone(),
                shutdown: stop_rx.clone(),
            },
            &self.static_dir,
        );
        let mut http_stop = stop_rx.clone();
        let http = tokio::spawn(async move {
            axum::serve(self.http, router)
                .with_graceful_shutdown(async move {
                    let _ = http_stop.wait_for(|s| *s).await;
                })
                .await
        });
        let sweeper = self
            .relay
            .limits
            .retention
            .map(|retention| tokio::spawn(sweep(self.relay.clone(), retention)));
        shutdown.await;
        tracing::info!("shutting down");
        if let Some(s) = sweeper {
            s.abort();
        }
        let _ = stop_tx.send(true);
        let _ = tcp.await;
        // Sessions send SHUTTING_DOWN and close; give them a moment to do it.
        for _ in 0..50 {
            if self.relay.metrics.connections_open.load(Ordering::Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match tokio::time::timeout(Duration::from_secs(2), http).await {
            Ok(Ok(result)) => result,
            _ => Ok(()),
        }
    }
}
