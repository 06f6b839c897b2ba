# flexim: `just serve` runs the server, `just test` runs everything CI runs.
# Both install what they need on a fresh machine that has Rust and `just`.

set shell := ["bash", "-euo", "pipefail", "-c"]
# Recipe arguments reach commands as "$@", so a message with spaces stays one argument.
set positional-arguments := true

# List the recipes.
default:
    @just --list

# Flags pass through (`just serve --help`); FLEXIM_TCP, FLEXIM_HTTP and FLEXIM_DATA override too.
# Build and run the server: FLEX/TCP on 127.0.0.1:4321, HTTP and WebSocket on 127.0.0.1:8080.
serve *ARGS:
    cargo run --release -p flexim-server -- "$@"

# Run the native client, e.g. `just flexim keygen --out alice.key` (see `just flexim --help`).
# The build shows its progress the first time (a minute or two) and is instant afterwards.
flexim *ARGS:
    @cargo build --release -p flexim-client --bin flexim
    @target/release/flexim "$@"

# Install what the build and the tests need and this machine lacks.
setup:
    rustup target add wasm32-unknown-unknown

# The whole suite: formatting, lints, the wasm32 build of the protocol crate, every test.
test: setup
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo build -p flexim-protocol --target wasm32-unknown-unknown
    cargo build --workspace --bins
    if command -v cargo-nextest >/dev/null; then cargo nextest run --workspace --no-fail-fast; else cargo test --workspace --no-fail-fast; fi
