//! The WebSocket transport at `/ws`: the same frames as TCP, one per binary message.

use std::io;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use bytes::Bytes;
use flexim_protocol::HEADER;
use flexim_protocol::frame;
use futures_util::{SinkExt, StreamExt};

use crate::http::AppState;
use crate::relay::{Metrics, Relay};
use crate::session::{self, End, Inbound};

/// Upgrades `GET /ws` with buffers sized for many connections.
pub async fn upgrade(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    let limits = &state.relay.limits;
    ws.max_message_size(limits.ws_max_message)
        .max_frame_size(limits.ws_max_message)
        .write_buffer_size(limits.ws_write_buffer)
        .max_write_buffer_size(limits.ws_write_buffer.max(limits.ws_max_message) * 2)
        .read_buffer_size(limits.ws_read_buffer)
        .on_upgrade(move |socket| handle(socket, state.relay, state.shutdown))
}

/// The reason given with close code 1009.
const TOO_BIG: &str = "message larger than any frame";
/// Marks the end of the stream (a close frame or a broken connection); never sent.
const GONE: &str = "";

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

async fn handle(
    socket: WebSocket,
    relay: Arc<Relay>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    Metrics::inc(&relay.metrics.connections_total);
    let (mut sink, mut stream) = socket.split();
    let first = tokio::time::timeout(relay.limits.header_timeout, stream.next()).await;
    let header_ok = matches!(&first, Ok(Some(Ok(Message::Binary(b)))) if b[..] == HEADER);
    if !header_ok {
        let _ = sink
            .send(close(
                close_code::PROTOCOL,
                "expected the 5-byte FLEX header as the first binary message",
            ))
            .await;
        return;
    }
    let max_body = relay.limits.max_body;
    // A closed or failed stream ends the session: map both to the end of the stream.
    let mut inbound = Box::pin(
        stream
            .filter_map(move |m| std::future::ready(to_inbound(m, max_body)))
            .take_while(|i| std::future::ready(!matches!(i, Inbound::Violation(GONE)))),
    );
    let end = {
        let mut outbound = (&mut sink)
            .sink_map_err(io::Error::other)
            .with(|b: Bytes| std::future::ready(Ok::<_, io::Error>(Message::Binary(b))));
        session::run(relay, &mut inbound, &mut outbound, shutdown).await
    };
    let goodbye = match end {
        End::Violation(TOO_BIG) => close(close_code::SIZE, TOO_BIG),
        End::Violation(why) => close(close_code::PROTOCOL, why),
        End::Shutdown => close(close_code::AWAY, "server shutting down"),
        _ => close(close_code::NORMAL, ""),
    };
    let _ = sink.send(goodbye).await;
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
