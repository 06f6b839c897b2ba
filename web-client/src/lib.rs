//! The flexim browser client: Rust compiled to WebAssembly.
//!
//! Everything that matters runs here, in the page: the key is generated and kept in
//! `localStorage`, the AUTH handshake and the end-to-end sealing use the same
//! `flexim-protocol` crate as the server and the native client, and the server only ever sees
//! sealed boxes. `static/app.js` merely loads this module, and `start` (run by wasm-bindgen
//! on load) takes over.
//!
//! The protocol itself is the engine of `flexim-session`, shared with the native client; this
//! crate only drives it. The modules split pure logic from the browser:
//! - [`model`]: what the engine's events mean for the page: state in, effects out.
//! - [`state`]: contacts, conversations and unread counts, and their saved form.
//! - [`room_state`]: the rooms' lines, unread counts and invitations, and their saved form.
//! - [`rooms`]: what the engine's room events and answers mean for the page.
//! - [`policy`]: small rules of the page (reconnect backoff, identity import, when to notify).
//! - `app`, `effects`, `actions` and `rooms_app` (browser only): the controller that ties the engine, the
//!   model, the socket, the storage and the page together; the runner of the model's effects;
//!   and the user's actions.
//! - `ui`, `rooms_ui`, `net`, `storage`, `dom`, `os` (browser only): the page (`rooms_ui`
//!   its rooms), the WebSocket and timers,
//!   `localStorage`, DOM helpers, and the clock and random source.
//!
//! The pure modules compile on every target, so their tests also run natively; the browser
//! modules exist only in the `wasm32` build.

pub mod consent;
pub mod model;
pub mod policy;
pub mod room_state;
pub mod rooms;
pub mod state;

#[cfg(target_arch = "wasm32")]
mod actions;
#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod banners;
#[cfg(target_arch = "wasm32")]
mod dom;
#[cfg(target_arch = "wasm32")]
mod effects;
#[cfg(target_arch = "wasm32")]
mod net;
#[cfg(target_arch = "wasm32")]
mod os;
#[cfg(target_arch = "wasm32")]
mod requests_ui;
#[cfg(target_arch = "wasm32")]
mod rooms_app;
#[cfg(target_arch = "wasm32")]
mod rooms_ui;
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
