//! Contacts' keys pinned on first use: learnt from answers, a changed key refused until the
//! user accepts it, senders named only by aliases pinned to their keys, and the pins saved and
//! restored like the outbox.

use flexim_protocol::{Datum, PublicKey, Roster, SecretKey};
use flexim_session::{
    Answer, ContactPins, EngineError, Event, KeyChange, Lookup, pinfile::PinFileError,
};

use crate::kit::*;

/// Asks the server about `who` as a client does before writing to it, and answers with `found`.
fn look_up(e: &mut Client, who: &str, found: &flexim_protocol::User) -> Vec<Event> {
    e.get_user(who, Lookup::Contact).unwrap();
    sent(e);
    e.handle_bytes(&frame_of(found.clone()));
    events(e)
}

/// The key changes among `evs`.
fn changes(evs: &[Event]) -> Vec<KeyChange> {
    evs.iter()
        .filter_map(|ev| match ev {
            Event::ContactKeyChanged(change) => Some(change.clone()),
            _ => None,
        })
        .collect()
}

/// An engine logged in with `bob` pinned to `pinned`, as a restart restores it.
fn pinned_engine(me: &SecretKey, server: &SecretKey, pinned: PublicKey) -> Client {
    let mut pins = ContactPins::new();
    pins.insert("bob", pinned);
    let mut e = engine(me);
    e.restore_contact_pins(pins);
    assert!(!e.take_pins_changed(), "restoring is not news to save");
    let evs = login(&mut e, server);
    assert!(matches!(evs.last(), Some(Event::LoggedIn { .. })));
    sent(&mut e);
    e
}

#[test]
fn the_first_answer_about_an_alias_pins_its_key() {
    let (server, me, bob) = (key(1), key(2), key(3).public_key());
    let mut e = logged_in(&me, &server);
    // Before any lookup, an alias is not sealed to: the server's current word is needed.
    assert_eq!(
        e.send_text_to("bob", "too early", &[], 5),
        Err(EngineError::UnknownContact("bob".into()))
    );
    assert!(sent(&mut e).is_empty() && e.outbox().is_empty());
    let evs = look_up(&mut e, "Bob", &user(&bob, &["bob"], true));
    assert!(changes(&evs).is_empty());
    assert_eq!(e.contact_pins().get("BOB"), Some(&bob));
    assert!(e.take_pins_changed());
    assert!(!e.take_pins_changed(), "reported once");
    assert_eq!(e.contact("bob"), Ok(bob));
    assert_eq!(e.contact_name(&bob), Some("bob"));
    // The same answer again changes nothing; ROSTER and SEARCH answers pin too.
    look_up(&mut e, "bob", &user(&bob, &["bob"], true));
    assert!(!e.take_pins_changed());
    let carol = key(4).public_key();
    e.roster().unwrap();
    e.handle_bytes(&frame_of(Roster {
        users: vec![user(&carol, &["carol", "c4"], false)],
    }));
    assert_eq!(e.contact_pins().get("c4"), Some(&carol));
    assert!(e.take_pins_changed());
    // This user's own aliases are not a contact's: they are not pinned.
    e.register("alice").unwrap();
    sent(&mut e);
    e.handle_bytes(&st(1, "registered alice"));
    assert_eq!(e.contact_pins().get("alice"), None);
    // Sending to the alias seals to the pinned key.
    let sending = e.send_text_to("BOB", "hi", &[], 6).unwrap();
    assert!(
        matches!(sent(&mut e).as_slice(), [Datum::Message(m)] if m.to == bob.to_hex() && m.id.as_deref() == Some(sending.id.as_str()))
    );
}

#[test]
fn a_changed_key_is_reported_and_nothing_is_sealed_to_it() {
    let (server, me) = (key(1), key(2));
    let (old, new) = (key(3).public_key(), key(9).public_key());
    let mut e = pinned_engine(&me, &server, old);
    let evs = look_up(&mut e, "bob", &user(&new, &["bob", "mallory"], true));
    let change = KeyChange {
        alias: "bob".into(),
        pinned: old,
        presented: new,
    };
    assert_eq!(changes(&evs), std::slice::from_ref(&change));
    // The answer comes after the warning, and without the alias it does not vouch for.
    let Some(Event::Answer {
        answer: Answer::User {
            result: Ok(found), ..
        },
        ..
    }) = evs.last()
    else {
        panic!("{evs:?}");
    };
    assert_eq!(
        (found.key, found.aliases.as_slice()),
        (new, &["mallory".to_string()][..])
    );
    assert_eq!(e.cached_user(&new).unwrap().aliases, ["mallory"]);
    // Nothing is sealed to the alias, whichever way it is asked.
    assert_eq!(
        e.send_text_to("Bob", "secret", &[], 7),
        Err(EngineError::ContactKeyChanged(change.clone()))
    );
    assert_eq!(
        e.contact("bob"),
        Err(EngineError::ContactKeyChanged(change.clone()))
    );
    assert_eq!(e.resolve_cached("bob"), None);
    assert!(sent(&mut e).is_empty() && e.outbox().is_empty());
    assert_eq!(e.key_change("BOB"), Some(&change));
    // The pin stays until the user decides, and the warning is not repeated for the same key.
    assert_eq!(e.contact_pins().get("bob"), Some(&old));
    let evs = look_up(&mut e, "bob", &user(&new, &["bob"], true));
    assert!(changes(&evs).is_empty());
    e.roster().unwrap();
    e.handle_bytes(&frame_of(Roster {
        users: vec![user(&new, &["bob"], true)],
    }));
    let evs = events(&mut e);
    assert!(changes(&evs).is_empty());
    assert!(matches!(
        evs.as_slice(),
        [Event::Answer { answer: Answer::Roster(Ok(users)), .. }] if users[0].aliases.is_empty()
    ));
}

#[test]
fn accepting_the_new_key_repins_it_and_lets_the_next_send_go() {
    let (server, me) = (key(1), key(2));
    let (old, new) = (key(3).public_key(), key(9).public_key());
    let mut e = pinned_engine(&me, &server, old);
    look_up(&mut e, "bob", &user(&new, &["bob"], true));
    assert!(e.send_text_to("bob", "refused", &[], 7).is_err());
    assert_eq!(e.accept_contact_key("carol"), None, "nothing to accept");
    assert!(!e.take_pins_changed());
    assert_eq!(e.accept_contact_key("BOB"), Some(new));
    assert!(e.take_pins_changed(), "the new pin is to be saved");
    assert_eq!(e.contact_pins().get("bob"), Some(&new));
    assert_eq!(e.key_change("bob"), None);
    assert_eq!(e.cached_user(&new).unwrap().aliases, ["bob"]);
    assert_eq!(e.contact_name(&new), Some("bob"));
    assert_eq!(e.contact_name(&old), None);
    e.send_text_to("bob", "now it goes", &[], 8).unwrap();
    assert!(matches!(sent(&mut e).as_slice(), [Datum::Message(m)] if m.to == new.to_hex()));
    // A second acceptance has nothing left to accept.
    assert_eq!(e.accept_contact_key("bob"), None);
}

#[test]
fn the_server_naming_the_pinned_key_again_ends_the_change() {
    let (server, me) = (key(1), key(2));
    let (old, new) = (key(3).public_key(), key(9).public_key());
    let mut e = pinned_engine(&me, &server, old);
    look_up(&mut e, "bob", &user(&new, &["bob"], true));
    assert!(e.key_change("bob").is_some());
    look_up(&mut e, "bob", &user(&old, &["bob"], true));
    assert_eq!(e.key_change("bob"), None);
    assert_eq!(e.contact("bob"), Ok(old));
    // And if it names the other key again, that is reported again.
    let evs = look_up(&mut e, "bob", &user(&new, &["bob"], true));
    assert_eq!(changes(&evs).len(), 1);
}

#[test]
fn a_sender_is_named_only_by_an_alias_pinned_to_its_key() {
    let (server, me) = (key(1), key(2));
    let (bob, mallory) = (key(3), key(9));
    let mut e = pinned_engine(&me, &server, bob.public_key());
    // Bob writes his key in `from`: the message is named by his pinned alias.
    e.handle_bytes(&frame_of(sealed(
        &bob,
        &me.public_key(),
        "from bob",
        5,
        None,
    )));
    let evs = events(&mut e);
    assert!(matches!(
        evs.as_slice(),
        [Event::Message(m)] if m.from == bob.public_key() && m.name.as_deref() == Some("bob")
    ));
    // Mallory writes "bob" in `from` and the server backs her: the message opens (it is hers),
    // is hers by key, and is not named bob; the change is reported before it.
    let mut forged = sealed(&mallory, &me.public_key(), "from mallory", 6, None);
    forged.from = "Bob".into();
    e.handle_bytes(&frame_of(forged));
    assert!(
        matches!(sent(&mut e).as_slice(), [Datum::Command(c)] if c.cmd == "GETUSER" && c.payload == ["Bob"])
    );
    e.handle_bytes(&frame_of(user(&mallory.public_key(), &["bob"], true)));
    let evs = events(&mut e);
    assert_eq!(changes(&evs).len(), 1, "{evs:?}");
    let Some(Event::Message(m)) = evs.last() else {
        panic!("{evs:?}");
    };
    assert_eq!(
        (m.from, m.from_text.as_str()),
        (mallory.public_key(), "Bob")
    );
    assert_eq!(m.name, None);
    // A sender whose alias was never pinned before is pinned on first use and named by it.
    let carol = key(4);
    let mut first = sealed(&carol, &me.public_key(), "from carol", 7, None);
    first.from = "carol".into();
    e.handle_bytes(&frame_of(first));
    sent(&mut e);
    e.handle_bytes(&frame_of(user(&carol.public_key(), &["carol"], true)));
    assert!(matches!(
        events(&mut e).as_slice(),
        [Event::Message(m)] if m.name.as_deref() == Some("carol")
    ));
    assert_eq!(e.contact_pins().get("carol"), Some(&carol.public_key()));
}

#[test]
fn the_pins_survive_a_restart_in_their_saved_form() {
    let (server, me) = (key(1), key(2));
    let (bob, new) = (key(3).public_key(), key(9).public_key());
    let mut e = logged_in(&me, &server);
    look_up(&mut e, "Bob", &user(&bob, &["Bob"], true));
    let text = e.contact_pins().to_text();
    assert!(text.starts_with("# "), "{text}");
    assert!(
        text.contains(&format!("\nBob {}\n", bob.to_hex())),
        "{text}"
    );

    // A new engine of the same identity, as an application starts one after a restart.
    let mut after = engine(&me);
    after.restore_contact_pins(ContactPins::from_text(&text).unwrap());
    login(&mut after, &server);
    sent(&mut after);
    let evs = look_up(&mut after, "bob", &user(&new, &["bob"], true));
    assert_eq!(
        changes(&evs),
        [KeyChange {
            alias: "Bob".into(),
            pinned: bob,
            presented: new
        }]
    );
    assert!(
        after
            .send_text_to("bob", "refused after the restart", &[], 9)
            .is_err()
    );
}

#[test]
fn pins_restored_after_the_login_win_over_what_it_learnt() {
    // A driver that learns which pins to restore only from the server's key restores them
    // after the login, when a lookup (a sender named by alias) may already have pinned another
    // key: the saved pin wins, and the other key is a change for the user.
    let (server, me) = (key(1), key(2));
    let (bob, new) = (key(3).public_key(), key(9).public_key());
    let mut e = logged_in(&me, &server);
    look_up(&mut e, "bob", &user(&new, &["bob"], true));
    assert_eq!(e.contact("bob"), Ok(new));
    let mut saved = ContactPins::new();
    saved.insert("bob", bob);
    e.restore_contact_pins(saved);
    let evs = events(&mut e);
    assert_eq!(changes(&evs).len(), 1, "{evs:?}");
    assert!(matches!(
        e.contact("bob"),
        Err(EngineError::ContactKeyChanged(_))
    ));
    assert!(e.cached_user(&new).unwrap().aliases.is_empty());
    assert_eq!(e.contact_pins().get("bob"), Some(&bob));
}

#[test]
fn the_saved_form_refuses_what_it_cannot_read_for_sure() {
    let k = key(3).public_key().to_hex();
    for (text, reason) in [
        (format!("bob {k}\nBOB {k}\n"), "pinned twice"),
        (format!("9lives {k}\n"), "letter"),
        (format!("bob {}\n", &k[..60]), "64 hex digits"),
        (format!("bob carol {k}\n"), "expected 2 fields"),
    ] {
        let err = ContactPins::from_text(&text).unwrap_err();
        assert!(matches!(err, PinFileError::Line { .. }), "{err:?}");
        assert!(err.to_string().contains(reason), "{text}: {err}");
    }
    let read = ContactPins::from_text(&format!("# a comment\n\nbob {}\n", k.to_uppercase()));
    assert_eq!(read.unwrap().get("Bob"), Some(&key(3).public_key()));
}
