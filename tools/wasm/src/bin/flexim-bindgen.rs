//! `flexim-bindgen WASM OUT_DIR`: writes the JavaScript glue for the browser client.
//!
//! This is `wasm-bindgen --target web` built from the workspace's own lockfile, so the tool
//! and the `wasm-bindgen` crate in the .wasm file can never disagree on the version (the tool
//! refuses a mismatch, and `cargo install --locked` cannot install a matching one here).

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(input), Some(out)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: flexim-bindgen WASM OUT_DIR");
    };
    let cli_args = [
        "wasm-bindgen".into(),
        "--target".into(),
        "web".into(),
        "--no-typescript".into(),
        // Function names help only a debugger; they are a fifth of the download.
        "--remove-name-section".into(),
        "--remove-producers-section".into(),
        "--out-dir".into(),
        out,
        input,
    ];
    wasm_bindgen_cli::wasm_bindgen::run_cli_with_args(cli_args)
}
