# flexim: `just serve` runs the server with the browser client, `just test` runs everything CI runs.
# Both install what they need on a fresh machine that has Rust and `just`.

set shell := ["bash", "-euo", "pipefail", "-c"]
# Recipe arguments reach commands as "$@", so a message with spaces stays one argument.
set positional-arguments := true

wasm := "target/wasm32-unknown-unknown/wasm-release/flexim_web.wasm"

# List the recipes.
default:
    @just --list

# Flags pass through (`just serve --help`); FLEXIM_TCP, FLEXIM_HTTP and FLEXIM_DATA override too.
# Build the browser client, then run the server: FLEX/TCP on 127.0.0.1:4321, web on http://127.0.0.1:8080.
serve *ARGS: build-web
    cargo run --release -p flexim-server -- "$@"

# Run the native client, e.g. `just flexim keygen --out alice.key` (see `just flexim --help`).
# The build shows its progress the first time (a minute or two) and is instant afterwards.
flexim *ARGS:
    @cargo build --release -p flexim-client --bin flexim
    @target/release/flexim "$@"

# Compile the browser client to WebAssembly and write it with its JavaScript glue to static/pkg/.
build-web: setup-wasm
    cargo build --profile wasm-release -p flexim-web --target wasm32-unknown-unknown
    cargo run --quiet -p flexim-wasm-tools --bin flexim-bindgen -- {{wasm}} static/pkg
    gzip -9 --keep --force static/pkg/flexim_web_bg.wasm static/pkg/flexim_web.js
    @echo "browser client: static/pkg/ ($(du -k static/pkg/flexim_web_bg.wasm | cut -f1) KiB of wasm, $(( $(wc -c < static/pkg/flexim_web_bg.wasm.gz) / 1024 )) KiB gzipped, as served)"

# The wasm32 target, for the browser client, the protocol crate and the client engine.
setup-wasm:
    @rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# Chromium and its WebDriver, for the browser tests (Debian packages; installed when missing).
setup-browser:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v chromedriver >/dev/null && [ -x /usr/bin/chromium ]; then exit 0; fi
    if [ "$(id -u)" != 0 ]; then
        echo "the browser tests need Chromium and chromedriver: sudo apt-get install chromium chromium-driver" >&2
        exit 1
    fi
    echo "installing chromium and chromium-driver (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null

# Redis, for the Redis store's tests and the multi-node tests (Debian's package; installed when missing).
setup-redis:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v redis-server >/dev/null; then exit 0; fi
    if [ "$(id -u)" != 0 ]; then
        echo "the Redis store's tests need redis-server: sudo apt-get install redis-server" >&2
        exit 1
    fi
    echo "installing redis-server (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null

# Everything the build and the tests need that this machine lacks.
setup: setup-wasm setup-browser setup-redis

# The whole suite: formatting, lints, wasm32 builds, the web client's tests in Chromium and natively, every test.
test: setup build-web
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy -p flexim-web --target wasm32-unknown-unknown --all-targets -- -D warnings
    cargo build -p flexim-protocol -p flexim-session --target wasm32-unknown-unknown
    cargo build --workspace --bins
    cargo test -p flexim-web --target wasm32-unknown-unknown
    if command -v cargo-nextest >/dev/null; then cargo nextest run --workspace --no-fail-fast; else cargo test --workspace --no-fail-fast; fi
    # The load generator once, briefly: it fails if a message is lost, duplicated or refused (never on speed).
    target/debug/flexim-bench durable --pairs 2 --messages 200
    target/debug/flexim-bench cross --pairs 2 --messages 100
    target/debug/flexim-bench relay --pairs 2 --messages 200
    target/debug/flexim-bench relay --transport ws --pairs 2 --messages 200
    target/debug/flexim-bench relay --ids --pairs 2 --messages 200
    target/debug/flexim-bench idle --tcp 100 --ws 100 --chatter 2 --hold 2
    target/debug/flexim-bench handshakes --count 200
    target/debug/flexim-bench soak --secs 5 --kill-every 3
    # Rooms: MLS group operations in-process (every commit, Welcome and message checked), and a room's
    # fan-out through the server with real commits (fails if a copy or a receipt is missing).
    target/debug/flexim-bench mls --sizes 3,5 --runs 3
    target/debug/flexim-bench rooms --sizes 3,5 --messages 50
    {{just_executable()}} fuzz-smoke

# Build the server and the load generator optimized and run a measurement, e.g.
# `just bench durable --pairs 8 --messages 5000` (docs/BENCHMARKS.md lists the commands and the figures).
bench *ARGS:
    cargo build --release -p flexim-server -p flexim-bench
    target/release/flexim-bench "$@"

# The fuzz targets (fuzz/, docs/FUZZING.md), built for libFuzzer on stable Rust: the coverage
# instrumentation cargo-fuzz passes with `--sanitizer none`, given to the target only (with
# `--target`, build scripts and proc macros are built without it) and in a target directory of
# their own, so the workspace's build is never redone.
fuzz-build:
    #!/usr/bin/env bash
    set -euo pipefail
    host="$(rustc -vV | sed -n 's/^host: //p')"
    export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth -Cllvm-args=-simplifycfg-branch-fold-threshold=0 --cfg fuzzing"
    cargo build --release --manifest-path fuzz/Cargo.toml --target-dir fuzz/target --target "$host" --bins
    ln -sfn "$host/release" fuzz/target/bin

# Fuzz one target (frame, datums, handshake, link, engine) for SECONDS (0: until stopped), e.g.
# `just fuzz engine 600`; more flags go to libFuzzer (`just fuzz frame 60 -jobs=2`). New inputs
# collect in fuzz/work/TARGET, crashes in fuzz/artifacts/TARGET; `just fuzz-merge` minimizes.
fuzz TARGET SECONDS="60" *ARGS: fuzz-build
    #!/usr/bin/env bash
    set -euo pipefail
    target="$1" seconds="$2"; shift 2
    mkdir -p "fuzz/work/$target" "fuzz/artifacts/$target" "fuzz/corpus/$target" "fuzz/regressions/$target"
    fuzz/target/bin/"$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" "$@" \
        "fuzz/work/$target" "fuzz/corpus/$target" "fuzz/regressions/$target"

# Minimize TARGET's committed corpus with what `just fuzz` found: a smallest set of inputs that
# reaches every edge reached by fuzz/corpus/TARGET and fuzz/work/TARGET replaces the former (edges
# only, not hit counts, which would keep thousands of inputs for the datum decoders).
fuzz-merge TARGET: fuzz-build
    #!/usr/bin/env bash
    set -euo pipefail
    target="$1" merged="fuzz/work/$1.merged"
    rm -rf "$merged" && mkdir -p "$merged" "fuzz/work/$target" "fuzz/corpus/$target"
    fuzz/target/bin/"$target" -set_cover_merge=1 -use_counters=0 -timeout=10 "$merged" "fuzz/corpus/$target" "fuzz/work/$target"
    rm -rf "fuzz/corpus/$target" && mv "$merged" "fuzz/corpus/$target"
    echo "fuzz/corpus/$target: $(ls "fuzz/corpus/$target" | wc -l) files, $(cat "fuzz/corpus/$target"/* | wc -c) bytes"

# Every fuzz target for SECONDS each (the test suite's bounded run, about 75 s in all): it
# fails on any crash, and the crashing input is left in fuzz/artifacts/TARGET.
fuzz-smoke SECONDS="15": fuzz-build
    #!/usr/bin/env bash
    set -euo pipefail
    for target in frame datums handshake link engine; do
        work="$(mktemp -d)"
        mkdir -p "fuzz/artifacts/$target" "fuzz/corpus/$target" "fuzz/regressions/$target"
        if ! fuzz/target/bin/"$target" -max_total_time="$1" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="fuzz/artifacts/$target/" "$work" "fuzz/corpus/$target" "fuzz/regressions/$target" \
            >"$work.log" 2>&1; then
            tail -n 60 "$work.log"
            echo "fuzz target $target failed; the crashing input is in fuzz/artifacts/$target/" >&2
            exit 1
        fi
        echo "$target: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$work.log")"
        rm -rf "$work" "$work.log"
    done
