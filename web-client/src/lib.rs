//! The flexim browser client: Rust compiled to WebAssembly.
//!
//! Everything that matters runs here, in the page: the key is generated and kept in
//! `localStorage`, the AUTH handshake and the end-to-end sealing use the same
//! `flexim-protocol` crate as the server and the native client, and the server only ever sees
//! sealed boxes. `static/app.js` merely loads this module, and `start` (run by wasm-bindgen
//! on load) takes over.
//!
//! The modules split pure logic from the browser:
//! - [`policy`]: small rules (reconnect backoff, server-key pinning, identity import,
//!   de-duplication, when to notify).
//! - [`state`]: contacts, conversations and unread counts, and their saved form.
//! - [`session`]: the protocol, bytes in and frames and events out, without I/O, with
//!   [`requests`] (what each sent datum is for), [`events`] (what it reports) and
//!   [`outbox`] (the messages waiting for confirmation, and what a reload must keep).
//! - `app`, `reactions` and `actions` (browser only): the controller that ties the session,
//!   the state, the socket, the storage and the page together; how it reacts to the
//!   session's events; and the user's actions.
//! - `ui`, `net`, `storage`, `dom` (browser only): the page, the WebSocket and timers,
//!   `localStorage`, and DOM helpers.
//!
//! The pure modules compile on every target, so their tests also run natively; the browser
//! modules exist only in the `wasm32` build.

pub mod events;
pub mod outbox;
pub mod policy;
pub mod requests;
pub mod session;
pub mod state;

#[cfg(target_arch = "wasm32")]
mod actions;
#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod dom;
#[cfg(target_arch = "wasm32")]
mod net;
#[cfg(target_arch = "wasm32")]
mod reactions;
#[cfg(target_arch = "wasm32")]
mod storage;
#[cfg(target_arch = "wasm32")]
mod ui;

/// Entry point, run by wasm-bindgen as soon as the module is instantiated.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    app::start();
}
