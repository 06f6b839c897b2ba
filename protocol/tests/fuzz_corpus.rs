//! The committed inputs of the protocol crate's fuzz targets (`frame`, `datums`, `handshake`,
//! `link`), replayed by the ordinary test suite through the very checks the fuzz targets run:
//! `fuzz/src/wire.rs` and its fixtures are included here as they are, so a regression input in
//! `fuzz/regressions/` keeps being checked without libFuzzer (docs/FUZZING.md).

#[allow(unreachable_pub)]
#[path = "../../fuzz/src/fixture.rs"]
mod fixture;
#[allow(unreachable_pub)]
#[path = "../../fuzz/src/wire.rs"]
mod wire;

#[test]
fn the_frame_inputs_pass() {
    fixture::replay("frame", wire::frame);
}

#[test]
fn the_datum_inputs_pass() {
    fixture::replay("datums", wire::datums);
}

#[test]
fn the_handshake_inputs_pass() {
    fixture::replay("handshake", wire::handshake);
}

#[test]
fn the_link_inputs_pass() {
    fixture::replay("link", wire::link);
}
