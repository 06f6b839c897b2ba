//! What every HTTP handler can reach (axum's state).

use std::sync::Arc;

use tokio::sync::watch;

use crate::conns::Connections;
use crate::edge::Edge;
use crate::relay::Relay;

/// The state of the HTTP side.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The one relay core, shared with the TCP transport.
    pub(crate) relay: Arc<Relay>,
    /// Flips to `true` when the server stops, so WebSocket sessions end cleanly.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The connection limit and tracker, shared with the TCP transport.
    pub(crate) conns: Arc<Connections>,
    /// TLS or not, the admin listener, and the origins `/ws` admits.
    pub(crate) edge: Arc<Edge>,
    /// The token the admin listener's actions need (`admin.token` in the data directory);
    /// `None` without an admin listener.
    pub(crate) admin_token: Option<crate::admin::token::Token>,
    /// Notified by the admin listener's stop action: the server then stops as on a signal.
    pub(crate) stop: Arc<tokio::sync::Notify>,
}
