//! The WebSocket to the server.
//!
//! The protocol over WebSocket is one frame per binary message in both directions, after a
//! first binary message holding the 5-byte header, so this layer needs no buffering: it
//! hands each binary message to the session as it is.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, Event, MessageEvent, WebSocket};

/// What happened on a socket.
pub(crate) enum SocketEvent {
    /// The connection is open: time to send the header.
    Open,
    /// One binary message: exactly one frame.
    Binary(Vec<u8>),
    /// A text message, which the protocol never uses.
    Text,
    /// The connection is closed (or never opened).
    Closed {
        /// The WebSocket close code (1006 when the connection simply dropped).
        code: u16,
        /// The close reason the server gave, often empty.
        reason: String,
    },
}

/// Receives socket events. A plain function with the connection's number rather than a
/// closure, so that the events of an old connection can be recognised and ignored.
pub(crate) type Deliver = fn(u64, SocketEvent);

/// An open (or opening) WebSocket with its event handlers.
pub(crate) struct Socket {
    /// The socket.
    ws: WebSocket,
    /// The handlers, kept alive as long as the socket is; detached on drop.
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

/// The server's WebSocket address: the page's own host, `/ws`, `wss:` when the page came
/// over HTTPS (a browser refuses `ws:` from an HTTPS page anyway).
pub(crate) fn ws_url() -> Result<String, String> {
    let location = crate::dom::window().ok_or("no window")?.location();
    let protocol = location.protocol().map_err(|_| "no location")?;
    let host = location.host().map_err(|_| "no location")?;
    let scheme = if protocol == "https:" { "wss" } else { "ws" };
    Ok(format!("{scheme}://{host}/ws"))
}

impl Socket {
    /// Opens a connection to `url`; its events go to `deliver` with `generation`.
    pub(crate) fn connect(url: &str, generation: u64, deliver: Deliver) -> Result<Socket, String> {
        let ws = WebSocket::new(url).map_err(|e| format!("cannot open {url}: {e:?}"))?;
        // Binary messages as ArrayBuffer, which copies straight into a Vec; the default,
        // Blob, would need an asynchronous read for every frame.
        ws.set_binary_type(BinaryType::Arraybuffer);
        let on_open =
            Closure::<dyn FnMut(Event)>::new(move |_| deliver(generation, SocketEvent::Open));
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let data = e.data();
            let event = match data.dyn_into::<js_sys::ArrayBuffer>() {
                Ok(buffer) => SocketEvent::Binary(js_sys::Uint8Array::new(&buffer).to_vec()),
                Err(_) => SocketEvent::Text,
            };
            deliver(generation, event);
        });
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            deliver(
                generation,
                SocketEvent::Closed {
                    code: e.code(),
                    reason: e.reason(),
                },
            )
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        // An error is always followed by a close event, which is where reconnecting starts;
        // the error event itself says nothing useful (browsers hide the cause on purpose).
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(Socket {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        })
    }

    /// Sends one binary message.
    pub(crate) fn send(&self, bytes: &[u8]) -> Result<(), String> {
        self.ws
            .send_with_u8_array(bytes)
            .map_err(|e| format!("the connection refused to send: {e:?}"))
    }

    /// Closes the connection without reporting anything more. The handlers are detached
    /// first, so that the closing socket's last events do not reach a page that has moved
    /// on (and so that closing from inside one of its own handlers is safe).
    pub(crate) fn shut(&self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        if self.ws.ready_state() < WebSocket::CLOSING {
            let _ = self.ws.close();
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.shut();
    }
}
