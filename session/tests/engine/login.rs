//! The login: pinning, the handshake, failures, and the alias claimed after it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use flexim_protocol::datum::Auth;
use flexim_protocol::handshake::{HandshakeError, ServerHandshake};
use flexim_protocol::status;
use flexim_protocol::{Datum, HEADER};
use flexim_session::{Answer, Config, Engine, Event, Framing, LoginError, PinCheck};

use crate::kit::*;

#[test]
fn first_use_pins_the_key_the_handshake_proved() {
    let server = key(1);
    let mut e = engine(&key(2));
    let evs = login(&mut e, &server);
    assert!(matches!(
        &evs[0],
        Event::ServerKey { key, check: PinCheck::FirstUse } if *key == server.public_key()
    ));
    let Some(Event::LoggedIn { me, server: s }) = evs.last() else {
        panic!("{evs:?}");
    };
    assert_eq!(me.key, key(2).public_key());
    assert_eq!(s.key, server.public_key());
    assert_eq!(e.pinned(), Some(&server.public_key()));
    assert_eq!(e.server().map(|u| u.key), Some(server.public_key()));
}

#[test]
fn a_changed_server_key_holds_the_login_until_accepted() {
    let (server, pinned) = (key(1), key(9).public_key());
    let mut e = engine_with(&key(2), Some(pinned), None);
    e.connect();
    assert_eq!(e.poll_transmit().as_deref(), Some(&HEADER[..]));
    e.handle_bytes(&frame_of(server_user(&server)));
    // Nothing about this user goes out to a server it cannot vouch for.
    assert!(sent(&mut e).is_empty());
    assert!(e.is_holding_server_key());
    assert!(matches!(
        events(&mut e).as_slice(),
        [Event::ServerKey { check: PinCheck::Mismatch { pinned: p }, .. }] if *p == pinned
    ));
    e.accept_server_key();
    assert!(matches!(sent(&mut e).as_slice(), [Datum::Command(c)] if c.cmd == "AUTH"));
    assert!(!e.is_holding_server_key());
}

#[test]
fn a_refusal_while_holding_fails_the_login() {
    let mut e = engine_with(&key(2), Some(key(9).public_key()), None);
    e.connect();
    e.handle_bytes(&frame_of(server_user(&key(1))));
    e.handle_bytes(&st(status::AUTH_FAILED, "authentication timed out"));
    let evs = events(&mut e);
    assert!(matches!(
        evs.last(),
        Some(Event::LoginFailed(LoginError::Refused { status: -6, .. }))
    ));
    assert!(!e.is_connected());
}

#[test]
fn a_server_without_the_announced_key_fails_the_login_before_the_identity_is_sent() {
    // The impostor announces the real server's key but holds another secret: it cannot read
    // message 1, so the best it can do is answer with a message 2 of its own making.
    let (real, impostor, me) = (key(1), key(3), key(2));
    let mut e = engine(&me);
    e.connect();
    e.poll_transmit();
    let hello = frame_of(server_user(&real));
    e.handle_bytes(&hello);
    let Datum::Command(auth) = &sent(&mut e)[0] else {
        panic!("no AUTH");
    };
    assert_eq!(
        ServerHandshake::start(&impostor, &hello, auth, [7; 32], 5).err(),
        Some(HandshakeError::Noise(1)),
        "message 1 is for the announced key only"
    );
    let forged = Auth {
        date: 5,
        challenge: B64.encode([0x42u8; 48]),
        last_seen: 0,
    };
    e.handle_bytes(&frame_of(forged));
    assert!(
        sent(&mut e).is_empty(),
        "message 3 (the identity) never goes out"
    );
    assert!(matches!(
        events(&mut e).last(),
        Some(Event::LoginFailed(LoginError::Handshake(
            HandshakeError::Noise(2)
        )))
    ));
}

#[test]
fn a_forged_record_after_the_login_breaks_the_link() {
    let (server, me) = (key(1), key(2));
    let mut e = logged_in(&me, &server);
    // A clear datum injected by someone on the path, then a record under other keys.
    e.inject(&st(status::GHOSTED, "ghosted"));
    assert!(matches!(events(&mut e).as_slice(), [Event::LinkBroken(_)]));
    assert!(
        !e.is_connected(),
        "nothing more is handled from the connection"
    );
    let mut e = logged_in(&me, &server);
    let mut other = logged_in(&key(4), &server);
    assert!(other.engine.poll_transmit().is_none());
    other.engine.roster().unwrap();
    let foreign = other.engine.poll_transmit().unwrap();
    e.inject(&foreign);
    assert!(matches!(
        events(&mut e).as_slice(),
        [Event::LinkBroken(flexim_protocol::LinkError::Forged)]
    ));
}

#[test]
fn garbage_in_place_of_the_introduction_is_not_a_flexim_server() {
    let mut e = engine(&key(2));
    e.connect();
    e.poll_transmit();
    // An HTTP server answering the header: "HTTP/1.1 400" read as a frame is no datum.
    e.handle_bytes(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    assert!(matches!(
        events(&mut e).as_slice(),
        [Event::LoginFailed(LoginError::NotFlexim(_))]
    ));
}

#[test]
fn an_http_server_on_the_tcp_port_is_not_a_flexim_server() {
    // Over TCP an HTTP server's answer looks like the start of a huge frame that never ends.
    let config = Config {
        pinned: None,
        alias: None,
        framing: Framing::Stream,
        rooms: true,
        pairs: false,
    };
    let mut e = Client::new(Engine::new(key(2), config, counter()));
    e.connect();
    e.poll_transmit();
    e.handle_bytes(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    assert!(
        events(&mut e).is_empty(),
        "not yet: it could be a long frame"
    );
    e.disconnected();
    assert!(matches!(
        events(&mut e).as_slice(),
        [Event::LoginFailed(LoginError::NotFlexim(why)), Event::Closed] if why.contains("no FLEX frame")
    ));
}

#[test]
fn the_login_survives_a_byte_stream_cut_anywhere() {
    // Over TCP the reads cut frames anywhere: every split of the server's bytes logs in.
    let server = key(1);
    let me = key(2);
    let intro = frame_of(server_user(&server));
    for cut in 0..=intro.len() {
        let config = Config {
            pinned: None,
            alias: None,
            framing: Framing::Stream,
            rooms: true,
            pairs: false,
        };
        let mut e = Client::new(Engine::new(me.clone(), config, counter()));
        e.connect();
        e.poll_transmit();
        e.handle_bytes(&intro[..cut]);
        e.handle_bytes(&intro[cut..]);
        let out = sent(&mut e);
        assert!(
            matches!(out.as_slice(), [Datum::Command(c)] if c.cmd == "AUTH"),
            "cut {cut}"
        );
    }
    // And several frames in one read come out one by one.
    let mut e = Client::new(Engine::new(
        me.clone(),
        Config {
            pinned: None,
            alias: None,
            framing: Framing::Stream,
            rooms: true,
            pairs: false,
        },
        counter(),
    ));
    e.connect();
    e.poll_transmit();
    let mut both = intro.clone();
    both.extend(st(status::PRESENCE_ONLINE, &key(5).public_key().to_hex()));
    e.handle_bytes(&both);
    assert_eq!(sent(&mut e).len(), 1);
}

#[test]
fn the_alias_is_claimed_with_register_after_the_resent_messages() {
    let server = key(1);
    let me = key(2);
    let bob = key(3).public_key();
    let mut e = engine_with(&me, None, Some("alice"));
    // A message written while offline waits for the login.
    let id = e.send_text(&bob, "written offline", &[], 5).unwrap().id;
    let evs = login(&mut e, &server);
    assert!(matches!(evs.last(), Some(Event::LoggedIn { .. })));
    let out = sent(&mut e);
    assert!(matches!(&out[0], Datum::Message(m) if m.id.as_deref() == Some(id.as_str())));
    assert!(matches!(&out[1], Datum::Command(c) if c.cmd == "REGISTER" && c.payload == ["alice"]));
    let request = e.alias_request().expect("the REGISTER is named");
    e.handle_bytes(&st(status::STORED, "stored"));
    e.handle_bytes(&st(status::OK, "registered alice"));
    let evs = events(&mut e);
    assert!(evs.iter().any(|ev| matches!(
        ev,
        Event::Answer { request: r, answer: Answer::Register { alias, result: Ok(_) } }
            if *r == request && alias == "alice"
    )));
    assert_eq!(e.user().unwrap().aliases, ["alice"]);
    assert_eq!(e.resolve_cached("ALICE"), Some(me.public_key()));
}

#[test]
fn an_alias_refused_for_good_is_not_asked_for_again() {
    let server = key(1);
    let mut e = engine_with(&key(2), None, Some("bob"));
    login(&mut e, &server);
    sent(&mut e);
    e.handle_bytes(&st(
        status::ALIAS_TAKEN,
        "the alias bob belongs to someone else",
    ));
    assert!(events(&mut e).iter().any(|ev| matches!(
        ev,
        Event::Answer { answer: Answer::Register { result: Err(r), .. }, .. } if r.status == -9
    )));
    assert_eq!(e.alias(), None);
    e.disconnected();
    login(&mut e, &server);
    assert!(
        sent(&mut e).is_empty(),
        "no REGISTER at the next login for an alias someone else has"
    );
    // A storage failure, by contrast, keeps the alias for the next login.
    let mut e = engine_with(&key(2), None, Some("carol"));
    login(&mut e, &server);
    sent(&mut e);
    e.handle_bytes(&st(status::INTERNAL, "storage failure"));
    assert_eq!(e.alias(), Some("carol"));
    // And an alias registered later is the one claimed from then on.
    e.register("dave").unwrap();
    e.handle_bytes(&st(status::OK, "registered dave"));
    assert_eq!(e.alias(), Some("dave"));
}
