//! The wasm-bindgen test runner, version-locked with the workspace (see `flexim-bindgen`).
//! `.cargo/config.toml` names it as the runner for `wasm32-unknown-unknown`, so
//! `cargo test --target wasm32-unknown-unknown` runs the web client's tests in headless Chromium.

fn main() -> anyhow::Result<()> {
    wasm_bindgen_cli::wasm_bindgen_test_runner::run_cli_with_args(std::env::args_os())
}
