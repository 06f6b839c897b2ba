//! The requests box in the page's model (docs/PROTOCOL.md §14): strangers who asked to talk are
//! kept apart from the conversations, named once the server says who they are, and leave the
//! box when the user answers. Runs natively and in headless Chromium, like `logic.rs`.

use flexim_protocol::{PublicKey, SecretKey, User};
use flexim_session::{Answer, Event, Incoming, Lookup, RequestId};
use flexim_web::model::{Context, Effect, Model};
use flexim_web::state::Contacts;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn key(seed: u8) -> PublicKey {
    SecretKey::from_bytes([seed; 32]).public_key()
}

fn ctx() -> Context {
    Context {
        now: 1_700_000_000,
        page_hidden: false,
        roster_pending: false,
        waiting: 0,
    }
}

fn message(from: PublicKey, request: bool) -> Incoming {
    Incoming {
        from,
        from_text: from.to_hex(),
        name: None,
        to: key(1).to_hex(),
        date: 1_700_000_000,
        flags: vec![],
        text: "hi".into(),
        id: Some("m1".into()),
        key: "k1".into(),
        request,
        forward_secret: true,
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn a_stranger_waits_in_the_box_is_named_and_leaves_when_answered() {
    let (me, stranger) = (key(1), key(2));
    let mut m = Model::new(me, Contacts::new(), None, None);
    let effects = m.apply(
        Event::Requested {
            from: stranger,
            conversation: "c".into(),
        },
        &ctx(),
    );
    assert!(effects.contains(&Effect::ShowRequests), "{effects:?}");
    assert!(
        effects.contains(&Effect::AskUser {
            query: stranger.to_hex(),
            purpose: Lookup::Refresh
        }),
        "{effects:?}"
    );
    assert!(m.is_request(&stranger));
    // Its message is shown under it, and the box does not list it twice.
    m.apply(Event::Message(message(stranger, true)), &ctx());
    assert_eq!(m.requests.len(), 1);
    // The server names it: the box is shown again with the alias.
    let user = User {
        aliases: vec!["mallory".into()],
        key: stranger,
        last_seen: 0,
        online: None,
    };
    let answer = Answer::User {
        query: stranger.to_hex(),
        purpose: Lookup::Refresh,
        result: Ok(user),
    };
    let effects = m.apply(
        Event::Answer {
            request: RequestId(1),
            answer,
        },
        &ctx(),
    );
    assert!(effects.contains(&Effect::ShowRequests), "{effects:?}");
    assert_eq!(m.name_of(&stranger), "mallory");
    assert_eq!(m.answer_request(&stranger), vec![Effect::ShowRequests]);
    assert!(!m.is_request(&stranger));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_contacts_message_is_no_request_and_the_login_asks_for_the_box() {
    let (me, friend) = (key(1), key(3));
    let mut m = Model::new(me, Contacts::new(), None, None);
    m.apply(Event::Message(message(friend, false)), &ctx());
    assert!(m.requests.is_empty());
    let server = User {
        aliases: vec![],
        key: key(9),
        last_seen: 0,
        online: None,
    };
    let me_user = User {
        aliases: vec![],
        key: me,
        last_seen: 0,
        online: Some(true),
    };
    let effects = m.apply(
        Event::LoggedIn {
            me: me_user,
            server,
        },
        &ctx(),
    );
    assert!(effects.contains(&Effect::AskRequests), "{effects:?}");
}
