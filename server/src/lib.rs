//! The flexim server: one relay core fed by a TCP transport and a WebSocket transport.
//!
//! `main` and the tests use the same two calls: [`Server::bind`] then [`Server::run`].
//! See `ARCHITECTURE.md` for the map and the invariants.

pub mod admin;
mod clock;
pub mod cluster;
pub mod config;
mod conns;
mod directory;
mod edge;
mod frames;
pub mod histogram;
mod http;
pub mod keyfile;
mod listener;
mod metrics;
pub mod origin;
mod peer;
pub mod rates;
mod relay;
mod session;
mod state;
pub mod store;
mod table;
mod tcp;
pub mod tls;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flexim_protocol::PublicKey;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub use config::{Config, EdgeConfig, Limits, StoreChoice};
use conns::Connections;
use edge::Edge;
use listener::HttpListener;
pub use origin::WebOrigin;
use relay::Relay;
use store::{EmbeddedStore, RedisStore, Store};
pub use tls::{TlsError, TlsFiles, TlsSlot};

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
    /// The cluster (Redis) could not be joined.
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] cluster::ClusterError),
    /// The TLS certificate or key could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A bound, not yet running server.
pub struct Server {
    /// The TCP listener, bound (port 0 resolved).
    tcp: TcpListener,
    /// The HTTP listener, bound.
    http: TcpListener,
    /// The admin listener (`/metrics`), when configured.
    admin: Option<TcpListener>,
    /// TLS for the HTTP listener, when configured; replaced by a reload.
    tls: Option<Arc<TlsSlot>>,
    /// What the HTTP side's handlers need to know of the configuration.
    edge: Arc<Edge>,
    /// The shared core.
    relay: Arc<Relay>,
    /// Where the browser client's files are.
    static_dir: std::path::PathBuf,
    /// Whether the server key was made by this start (a fresh data directory).
    pub new_key: bool,
    /// The admin listener's token (`admin.token` in the data directory), with it.
    admin_token: Option<admin::Token>,
    /// Signals from the other nodes, when several share one Redis.
    signals: Option<mpsc::Receiver<cluster::Signal>>,
    /// This node's id among several; `None` for a single node.
    pub node: Option<String>,
    /// Why "stored" may not be durable with this store's settings (shown at start-up).
    pub warnings: Vec<String>,
}

/// What a shutdown did ([`Server::run`]'s result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Connections open when it began, each told the server stops (Status -17).
    pub connections: usize,
    /// Those still open after the grace period (`Limits::shutdown_grace`), dropped.
    pub left: usize,
}

impl Drained {
    /// The connections that closed within the grace period.
    pub fn closed(&self) -> usize {
        self.connections - self.left.min(self.connections)
    }

    /// Logs what the shutdown did, `took` after it began, with `grace` allowed.
    fn log(&self, took: Duration, grace: Duration) {
        let (connections, left) = (self.connections, self.left);
        match left {
            0 => tracing::info!(
                "drained: {connections} connections closed in {} ms",
                took.as_millis()
            ),
            _ => tracing::warn!(
                "drained: {} of {connections} connections closed; {left} did not within {grace:?} \
                 and are dropped",
                self.closed()
            ),
        }
    }
}

/// Changes what can change while the server runs ([`Server::reloader`]): the limits of
/// [`config::Live`] and the TLS certificate.
#[derive(Clone)]
pub struct Reloader {
    /// Where the live limits are.
    relay: Arc<Relay>,
    /// The HTTP listener's TLS, when it has some.
    tls: Option<Arc<TlsSlot>>,
}

impl Reloader {
    /// Takes the [`config::Live`] limits of `limits` (the others are ignored: they change
    /// with a restart) and returns what changed, as `flag: old -> new`.
    pub fn reload(&self, limits: &Limits) -> Vec<String> {
        self.relay.reload(limits.live())
    }

    /// The listener's TLS, to read its files again ([`TlsSlot::reload`]); `None` without TLS.
    pub fn tls(&self) -> Option<&TlsSlot> {
        self.tls.as_deref()
    }
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
    /// Reads the TLS files (when configured), creates the data directory, loads or makes the
    /// key, opens the store and binds the listeners. Nothing is served until [`Server::run`].
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        // First, so that a wrong file is reported before anything is created or opened.
        let tls = match &config.edge.tls {
            Some(files) => Some(Arc::new(TlsSlot::load(files)?)),
            None => None,
        };
        std::fs::create_dir_all(&config.data).map_err(|source| StartError::DataDir {
            path: config.data.display().to_string(),
            source,
        })?;
        let (key, new_key) = keyfile::load_or_create(&config.data.join("server.key"))?;
        let mut warnings = Vec::new();
        let store: Arc<dyn Store> = match &config.store {
            StoreChoice::Embedded => {
                Arc::new(EmbeddedStore::open(&config.data.join("flexim.redb"))?)
            }
            StoreChoice::Redis(url) => {
                let store = RedisStore::connect(url).await?;
                warnings = store.durability_warnings().await;
                Arc::new(store)
            }
        };
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let tcp = bind(config.tcp).await?;
        let http = bind(config.http).await?;
        let admin = match config.edge.admin {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let admin_token = match admin {
            Some(_) => Some(admin::Token(
                keyfile::secret_file(&config.data.join(admin::TOKEN_FILE))?.0,
            )),
            None => None,
        };
        let edge = Edge::new(
            tls.is_some(),
            admin.is_some(),
            config.edge.allowed_origins.clone(),
        );
        let mut relay = Relay::new(key, &config.name, store, config.limits);
        let (mut signals, mut node) = (None, None);
        if let StoreChoice::Redis(url) = &config.store {
            let (cluster, rx) = cluster::Cluster::connect(url).await?;
            node = Some(cluster.node().to_string());
            relay = relay.with_cluster(cluster);
            signals = Some(rx);
        }
        Ok(Server {
            tcp,
            http,
            admin,
            tls,
            edge: Arc::new(edge),
            relay: Arc::new(relay),
            static_dir: config.static_dir,
            new_key,
            admin_token,
            signals,
            node,
            warnings,
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

    /// The bound admin address, when there is an admin listener.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .map(|l| l.local_addr().expect("bound socket has an address"))
    }

    /// Whether the HTTP listener speaks TLS (https and wss).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A handle that changes the limits of [`config::Live`] while the server runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            relay: self.relay.clone(),
            tls: self.tls.clone(),
        }
    }

    /// The server's public key.
    pub fn public_key(&self) -> PublicKey {
        self.relay.server_key.public_key()
    }

    /// Serves both transports (and the admin listener) until `shutdown` completes, then tells
    /// every session, waits (at most `Limits::shutdown_grace`) for every connection's task to
    /// end, and returns.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> std::io::Result<Drained> {
        let cluster_tasks = self
            .signals
            .take()
            .map(|signals| self.cluster_tasks(signals));
        let limits = self.relay.limits.clone();
        let conns = Arc::new(Connections::new(&limits));
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_asked = Arc::new(tokio::sync::Notify::new());
        let tcp = tokio::spawn(tcp::serve(
            self.tcp,
            self.relay.clone(),
            conns.clone(),
            stop_rx.clone(),
        ));
        let state = state::AppState {
            relay: self.relay.clone(),
            shutdown: stop_rx.clone(),
            conns: conns.clone(),
            edge: self.edge.clone(),
            admin_token: self.admin_token,
            stop: stop_asked.clone(),
        };
        let timeout = limits.http_timeout;
        let admin = self.admin.map(|listener| HttpListener {
            listener,
            router: http::admin_app(state.clone()),
            tls: None,
            timeout,
        });
        let public = HttpListener {
            router: http::app(state, &self.static_dir),
            listener: self.http,
            tls: self.tls,
            timeout,
        };
        let http = tokio::spawn(public.serve(stop_rx.clone()));
        let admin = admin.map(|admin| tokio::spawn(admin.serve(stop_rx.clone())));
        let sweeper = limits
            .retention
            .map(|retention| tokio::spawn(sweep(self.relay.clone(), retention)));
        tokio::select! {
            _ = shutdown => {}
            _ = stop_asked.notified() => {}
        }
        tracing::info!("shutting down");
        if let Some(s) = sweeper {
            s.abort();
        }
        for t in cluster_tasks.into_iter().flatten() {
            t.abort();
        }
        let connections = conns.len();
        let _ = stop_tx.send(true);
        let _ = tcp.await;
        // Sessions send SHUTTING_DOWN and close; wait for their tasks (not a counter), so that
        // every logout has run when this returns.
        tracing::info!(
            "telling {connections} connections the server stops (Status -17); waiting up to {:?}",
            limits.shutdown_grace
        );
        let began = std::time::Instant::now();
        let left = match conns.wait(limits.shutdown_grace).await {
            true => 0,
            false => conns.len(),
        };
        let drained = Drained { connections, left };
        drained.log(began.elapsed(), limits.shutdown_grace);
        // HTTP connections finish the request they are answering and close; one that does
        // not within the grace period is left behind rather than holding up the shutdown.
        let _ = tokio::time::timeout(limits.shutdown_grace, http).await;
        if let Some(admin) = admin {
            let _ = tokio::time::timeout(limits.shutdown_grace, admin).await;
        }
        Ok(drained)
    }

    /// The tasks of one node among several: signals from the others, and claims of keys whose
    /// holder died.
    fn cluster_tasks(
        &self,
        mut signals: mpsc::Receiver<cluster::Signal>,
    ) -> [tokio::task::JoinHandle<()>; 2] {
        let relay = self.relay.clone();
        let on_signal = tokio::spawn(async move {
            while let Some(s) = signals.recv().await {
                relay.signal(s).await;
            }
        });
        // Sessions waiting for a key held by a node that died take it over once that node's
        // heartbeat has expired.
        let relay = self.relay.clone();
        let claims = tokio::spawn(async move {
            loop {
                tokio::time::sleep(cluster::HEARTBEAT_EVERY).await;
                relay.claim_waiting(&[]).await;
            }
        });
        [on_signal, claims]
    }
}
