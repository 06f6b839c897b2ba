//! The WebSocket transport at `/ws`: the same frames as TCP, one per binary message.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use bytes::Bytes;
use flexim_protocol::HEADER;
use flexim_protocol::frame;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;

use crate::conns::{Refusal, Slot};
use crate::metrics;
use crate::relay::Relay;
use crate::session::{self, End, Inbound};
use crate::state::AppState;

/// Upgrades `GET /ws` with buffers sized for many connections. A connection over the limit is
/// upgraded all the same, so that it can be told why it is refused (a browser sees nothing of
/// an HTTP error answer to its upgrade).
pub(crate) async fn upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
) -> Response {
    metrics::inc(&state.relay.metrics.connections_total);
    let slot = state.conns.admit(peer.ip());
    let limits = &state.relay.limits;
    let conns = state.conns.clone();
    ws.max_message_size(limits.ws_max_message)
        .max_frame_size(limits.ws_max_message)
        .write_buffer_size(limits.ws_write_buffer)
        .max_write_buffer_size(limits.ws_write_buffer.max(limits.ws_max_message) * 2)
        .read_buffer_size(limits.ws_read_buffer)
        .on_upgrade(move |socket| conns.track(handle(socket, state, slot, peer.ip())))
}

/// The reason given with close code 1009.
const TOO_BIG: &str = "message larger than any frame";
/// Marks the end of the stream (a close frame or a broken connection); never sent.
const GONE: &str = "";
/// Close code 1013, "try again later": the server is full.
const TRY_AGAIN_LATER: u16 = 1013;

/// Turns one WebSocket message into what the session driver expects.
fn to_inbound(msg: Result<Message, axum::Error>, max_body: usize) -> Option<Inbound> {
    match msg {
        Ok(Message::Binary(b)) => Some(match frame::split_exact(&b, max_body) {
            Ok(_) => Inbound::Frame(b),
            Err(e) => Inbound::Bad(e),
        }),
        Ok(Message::Text(_)) => Some(Inbound::Violation(
            "text messages are not allowed: send binary frames",
        )),
        // Pings are answered by the WebSocket layer itself; pongs need nothing.
        Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => None,
        // tungstenite refuses a message over `ws_max_message` with a capacity error; no frame
        // can be that long, so the client gets close code 1009 rather than a Status.
        Err(e) if e.to_string().contains("too long") => Some(Inbound::Violation(TOO_BIG)),
        Ok(Message::Close(_)) | Err(_) => Some(Inbound::Violation(GONE)),
    }
}

/// Waits for the header (at most `Limits::header_timeout`, and not past shutdown); false if it
/// did not come or was wrong.
async fn header(
    stream: &mut SplitStream<WebSocket>,
    relay: &Relay,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let first = tokio::select! {
        first = tokio::time::timeout(relay.limits.header_timeout, stream.next()) => first,
        _ = shutdown.wait_for(|stop| *stop) => return false,
    };
    matches!(&first, Ok(Some(Ok(Message::Binary(b)))) if b[..] == HEADER)
}

/// Serves one WebSocket connection, or refuses it when it has no slot.
async fn handle(socket: WebSocket, state: AppState, slot: Result<Slot, Refusal>, peer: IpAddr) {
    let AppState {
        relay,
        mut shutdown,
        conns,
        ..
    } = state;
    let (mut sink, mut stream) = socket.split();
    if !header(&mut stream, &relay, &mut shutdown).await {
        let why = "expected the 5-byte FLEX header as the first binary message";
        let _ = sink.send(close(close_code::PROTOCOL, why)).await;
        return;
    }
    let _slot = match slot {
        Ok(slot) => slot,
        Err(why) => {
            relay.metrics.connection_refused(why);
            let _ = sink.send(Message::Binary(conns.refusal(why))).await;
            let reason = match why {
                Refusal::ServerFull => "server full",
                Refusal::AddressFull | Refusal::TooFast(_) => "address limit",
            };
            let _ = sink.send(close(TRY_AGAIN_LATER, reason)).await;
            return;
        }
    };
    let end = serve(&mut sink, stream, relay, peer, shutdown).await;
    let goodbye = match end {
        End::Violation(TOO_BIG) => close(close_code::SIZE, TOO_BIG),
        End::Violation(why) => close(close_code::PROTOCOL, why),
        End::Shutdown => close(close_code::AWAY, "server shutting down"),
        _ => close(close_code::NORMAL, ""),
    };
    let _ = sink.send(goodbye).await;
}

/// Runs the session over the WebSocket's two halves.
async fn serve(
    sink: &mut SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    relay: Arc<Relay>,
    peer: IpAddr,
    shutdown: watch::Receiver<bool>,
) -> End {
    let max_body = crate::config::RECORD_BODY;
    // A closed or failed stream ends the session: map both to the end of the stream.
    let mut inbound = Box::pin(
        stream
            .filter_map(move |m| std::future::ready(to_inbound(m, max_body)))
            .take_while(|i| std::future::ready(!matches!(i, Inbound::Violation(GONE)))),
    );
    let outbound = sink
        .sink_map_err(io::Error::other)
        .with(|b: Bytes| std::future::ready(Ok::<_, io::Error>(Message::Binary(b))));
    session::run(relay, (peer, "ws"), &mut inbound, outbound, shutdown).await
}

/// A close frame.
fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
