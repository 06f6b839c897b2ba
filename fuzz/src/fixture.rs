//! Fixed keys and real handshakes, shared by the fuzz targets and the tests that replay their
//! corpora. Everything here is deterministic (keys and ephemeral bytes are constants), so one
//! input always takes the same path: libFuzzer needs that to tell new coverage from noise, and
//! a crashing input found once crashes again when replayed by `cargo test`.

use flexim_protocol::handshake::{ClientHandshake, ClientStep, ServerHandshake};
use flexim_protocol::{AuthResponse, Command, Datum, Link, SecretKey, User};

/// The pretend server's identity.
pub fn server_key() -> SecretKey {
    SecretKey::from_bytes([1; 32])
}

/// The client's identity.
pub fn client_key() -> SecretKey {
    SecretKey::from_bytes([2; 32])
}

/// A third party, who writes to the client.
pub fn peer_key() -> SecretKey {
    SecretKey::from_bytes([3; 32])
}

/// The server's introduction, as the server sends it after the header.
pub fn hello(server: &SecretKey) -> User {
    User {
        aliases: vec!["flexim".into()],
        key: server.public_key(),
        last_seen: 0,
        online: None,
    }
}

/// The introduction's frame, which the handshake binds into its prologue byte for byte.
pub fn hello_frame(server: &SecretKey) -> Vec<u8> {
    Datum::User(hello(server))
        .to_frame()
        .expect("a User datum fits in a frame")
}

/// A client handshake that has read the real introduction, and its message 1 (the AUTH
/// command).
pub fn client_after_hello() -> (ClientHandshake, Command) {
    let server = server_key();
    let frame = hello_frame(&server);
    let mut hs = ClientHandshake::new(client_key());
    match hs.handle(Datum::User(hello(&server)), &frame, &mut |b| b.fill(7)) {
        Ok(ClientStep::Send(Datum::Command(auth))) => (hs, auth),
        _ => panic!("the client answers the real introduction with AUTH"),
    }
}

/// The server's side after a real message 1, waiting for message 3.
pub fn server_after_message1() -> ServerHandshake {
    let (_, auth) = client_after_hello();
    let (pending, _) = ServerHandshake::start(
        &server_key(),
        &hello_frame(&server_key()),
        &auth,
        [9; 32],
        0,
    )
    .expect("the server reads a real message 1");
    pending
}

/// A linked pair from a real handshake with fixed keys: the client's end, then the server's.
pub fn linked() -> (Link, Link) {
    let (mut hs, auth) = client_after_hello();
    let server = server_key();
    let (pending, challenge) =
        ServerHandshake::start(&server, &hello_frame(&server), &auth, [9; 32], 0)
            .expect("the server reads a real message 1");
    let Ok(ClientStep::Linked { send, link }) =
        hs.handle(Datum::Auth(challenge), &[], &mut |b| b.fill(7))
    else {
        panic!("the client reads a real message 2");
    };
    let Datum::AuthResponse(AuthResponse { challenge }) = send else {
        panic!("message 3 travels in an AuthResponse");
    };
    let (_, server_link) = pending
        .finish(&AuthResponse { challenge })
        .expect("the server reads a real message 3");
    (link, server_link)
}

/// The fuzzer's bytes read front to back as small fields; past the end every field is zero or
/// empty, so any input is a valid program of operations.
pub struct Input<'a> {
    /// What is left.
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data` from the start.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { rest: data }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next byte, or 0.
    pub fn byte(&mut self) -> u8 {
        let (first, rest) = self.rest.split_first().unwrap_or((&0, &[]));
        self.rest = rest;
        *first
    }

    /// The next `n` bytes, or as many as are left.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        taken
    }

    /// A chunk whose length is the next byte.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte());
        self.bytes(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.rest.len())
    }
}

/// Replays every committed input of `target` through `check`: the minimized seed corpus in
/// `fuzz/corpus/TARGET` and the inputs that once found a bug in `fuzz/regressions/TARGET`.
/// Returns how many inputs ran; a corpus that is missing or empty is a failure, so that a
/// test that replays it cannot pass by finding nothing.
pub fn replay(target: &str, check: fn(&[u8])) -> usize {
    // Both crates whose tests replay the corpus (protocol/, session/) sit beside fuzz/.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut count = 0;
    for kind in ["corpus", "regressions"] {
        let dir = root.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            assert_eq!(kind, "regressions", "{} is missing", dir.display());
            continue;
        };
        let mut paths: Vec<_> = entries
            .map(|e| e.expect("a readable directory").path())
            .collect();
        paths.sort();
        for path in paths.iter().filter(|p| p.is_file()) {
            let bytes = std::fs::read(path).expect("a readable input");
            // The check's own panic message comes first; this line names the input.
            if std::panic::catch_unwind(|| check(&bytes)).is_err() {
                panic!("{} fails its check", path.display());
            }
            count += 1;
        }
    }
    assert!(count > 0, "no inputs for the {target} fuzz target");
    count
}
