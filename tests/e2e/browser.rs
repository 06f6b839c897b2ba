//! The browser client in real headless Chromium (through chromedriver), with a native client:
//! browser->browser, browser->native, native->browser, presence, offline delivery to a browser,
//! identity across reloads, unread counts, and each outgoing message's delivery state (sending,
//! relayed, stored, delivered) as the server's answers and the recipients' acknowledgements
//! arrive.

use std::path::Path;
use std::time::{Duration, Instant};

use flexim_client::{Client, Event, Identity};
use flexim_protocol::{PublicKey, status};
use flexim_tests::webdriver::{Browser, Driver};
use flexim_tests::{TestServer, new_key};
use serde_json::json;

/// Long enough for a cold Chromium to load the wasm bundle on a busy 2-core machine.
pub(crate) const UI_WAIT: Duration = Duration::from_secs(30);

const ENTER: &str = "\u{E007}";

pub(crate) async fn set_value(b: &Browser, css: &str, text: &str) {
    b.js(
        "const el = document.querySelector(arguments[0]); el.value = arguments[1]; \
         el.dispatchEvent(new Event('input', {bubbles: true}));",
        vec![json!(css), json!(text)],
    )
    .await
    .unwrap();
}

/// Opens the page and waits until the client is logged in; returns its key hex.
pub(crate) async fn open(b: &Browser, url: &str) -> String {
    b.goto(url).await.unwrap();
    b.wait_for("#conn-state[data-state=online]", UI_WAIT)
        .await
        .unwrap();
    let key = b.text_of("#my-key").await.unwrap().trim().to_string();
    assert!(PublicKey::from_hex(&key).is_some(), "{key:?}");
    key
}

async fn register(b: &Browser, alias: &str) -> String {
    set_value(b, "#alias-input", alias).await;
    b.click("#alias-button").await.unwrap();
    // Every answer names the alias it is about; waiting for that (not just for any text)
    // keeps an earlier attempt's answer from being read as this one's, and skipping the
    // page's own "registering …" keeps the request from being read as its answer.
    b.wait_text("#alias-result", UI_WAIT, |t| {
        t.contains(alias) && !t.starts_with("registering")
    })
    .await
    .unwrap()
}

pub(crate) async fn open_conversation(b: &Browser, who: &str, key: &str) {
    set_value(b, "#contact-input", who).await;
    b.click("#contact-add").await.unwrap();
    b.wait_for(&format!("#conversation[data-key='{key}']"), UI_WAIT)
        .await
        .unwrap();
}

pub(crate) async fn send(b: &Browser, text: &str) {
    b.type_into("#composer", &format!("{text}{ENTER}"))
        .await
        .unwrap();
}

/// Waits until the outgoing message reading `text` in `b`'s open conversation shows the
/// delivery state `state` (`.delivery[data-state]`); returns the label shown with it.
async fn wait_delivery(b: &Browser, text: &str, state: &str) -> String {
    let deadline = Instant::now() + UI_WAIT;
    loop {
        let seen = b
            .js(
                "const line = [...document.querySelectorAll('#messages .message.out')] \
                   .find(m => m.querySelector('.text').textContent === arguments[0]); \
                 const d = line && line.querySelector('.delivery[data-state]'); \
                 return d ? [d.getAttribute('data-state'), d.textContent] : null;",
                vec![json!(text)],
            )
            .await
            .unwrap();
        if seen[0] == json!(state) {
            return seen[1].as_str().unwrap_or_default().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{text:?} never showed {state:?}; it shows {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ids of the messages `b`'s page keeps in storage until they are confirmed.
async fn outbox_ids(b: &Browser) -> Vec<String> {
    let saved = b
        .js("return localStorage.getItem('flexim.delivery');", vec![])
        .await
        .unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(saved.as_str().expect("the page saved its outbox")).unwrap();
    saved["outbox"]
        .as_array()
        .expect("an outbox list")
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn contact(key: &str) -> String {
    format!("#contacts li.contact[data-key='{key}']")
}

/// A stranger's entry in the requests box (docs/PROTOCOL.md §14).
fn request(key: &str) -> String {
    format!("#requests li.request[data-key='{key}']")
}

pub(crate) async fn next_message(c: &mut Client) -> flexim_client::Received {
    loop {
        match tokio::time::timeout(UI_WAIT, c.next_event())
            .await
            .expect("a message reaches the native client")
            .unwrap()
        {
            Event::Message(m) => return m,
            Event::Closed => panic!("native client closed"),
            _ => continue,
        }
    }
}

/// Runs a browser scenario to its end on a thread of its own with a 32 MiB stack: the scenarios
/// are long chains of awaits, and unoptimized their poll frames outgrow a test thread's 2 MiB.
/// A panic in the scenario fails the calling test.
pub(crate) fn on_a_big_stack<F>(name: &str, scenario: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let thread = std::thread::Builder::new()
        .name(name.into())
        .stack_size(32 * 1024 * 1024)
        .spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(scenario())
        })
        .unwrap();
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn two_browsers_and_a_native_client_chat_end_to_end() {
    on_a_big_stack("browser-scenario", scenario);
}

async fn scenario() {
    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../static/pkg/flexim_web.js");
    assert!(
        bundle.exists(),
        "the browser bundle is missing: run `just build-web` (or `just test`) first"
    );
    let server = TestServer::start();
    let url = server.http.clone();
    let driver = Driver::start().await.unwrap();
    let anna = driver.browser(1100, 760).await.unwrap();
    let ben = driver.browser(1100, 760).await.unwrap();

    let anna_key = open(&anna, &url).await;
    let ben_key = open(&ben, &url).await;
    assert_ne!(anna_key, ben_key, "each browser made its own identity");
    let server_fp = PublicKey::from_hex(&server.key).unwrap().fingerprint();
    assert_eq!(
        anna.text_of("#server-fingerprint").await.unwrap().trim(),
        server_fp
    );
    let anna_fp = PublicKey::from_hex(&anna_key).unwrap().fingerprint();
    assert_eq!(
        anna.text_of("#my-fingerprint").await.unwrap().trim(),
        anna_fp
    );

    // Aliases: first come, first served, with a clear message when taken.
    let answer = register(&anna, "anna").await;
    assert!(answer.contains("registered"), "{answer}");
    let answer = register(&ben, "anna").await;
    assert!(answer.contains("taken"), "{answer}");
    let answer = register(&ben, "ben").await;
    assert!(answer.contains("registered"), "{answer}");

    // The identity survives a reload.
    assert_eq!(open(&anna, &url).await, anna_key);

    // A native client on TCP.
    let carl_id = Identity::from_secret(new_key());
    let carl_key = carl_id.public_key().to_hex();
    let mut carl = Client::connect(&server.tcp.to_string(), &carl_id, Some("carl"))
        .await
        .unwrap();

    // Browser -> browser, by alias; the contact's fingerprint is shown; an unread count appears.
    open_conversation(&ben, "anna", &anna_key).await;
    assert_eq!(
        ben.text_of("#contact-fingerprint").await.unwrap().trim(),
        anna_fp
    );
    send(&ben, "hello anna, ben here").await;
    // Anna's page acknowledges what it received even before she reads it, so Ben's page
    // learns that it was delivered.
    assert_eq!(
        wait_delivery(&ben, "hello anna, ben here", "delivered").await,
        "delivered ✓"
    );
    // Consent: Ben is a stranger to Anna, so he is in her requests box, apart from her
    // conversations, until she accepts him.
    anna.wait_text(&request(&ben_key), UI_WAIT, |t| t.contains("ben"))
        .await
        .unwrap();
    assert!(
        anna.find(&contact(&ben_key)).await.unwrap().is_none(),
        "a request is not a conversation"
    );
    anna.click(&format!("{} .request-accept", request(&ben_key)))
        .await
        .unwrap();
    anna.wait_for(&contact(&ben_key), UI_WAIT).await.unwrap();
    assert!(
        anna.find(&request(&ben_key)).await.unwrap().is_none(),
        "an accepted request leaves the box"
    );
    let unread = format!("{} .unread", contact(&ben_key));
    anna.click(&contact(&ben_key)).await.unwrap();
    anna.wait_text("#messages .message.in .text", UI_WAIT, |t| {
        t == "hello anna, ben here"
    })
    .await
    .unwrap();
    assert!(
        anna.attr(&unread, "hidden").await.unwrap().is_some(),
        "read messages are not unread"
    );
    // Between two pages the conversation runs on MLS (their pair room): no line is marked.
    assert!(
        anna.find("#messages .message.in .weak")
            .await
            .unwrap()
            .is_none(),
        "a message in the pair room is forward secret"
    );

    // Browser -> native, by key.
    open_conversation(&anna, &carl_key, &carl_key).await;
    send(&anna, "hi carl, from a browser").await;
    let m = next_message(&mut carl).await;
    assert_eq!(m.text, "hi carl, from a browser");
    assert_eq!(m.from.to_hex(), anna_key);
    assert!(m.forward_secret, "the page writes in the pair room, on MLS");
    assert!(
        m.request,
        "Anna is a stranger to Carl: her message is a request"
    );
    // Carl accepts her: from now on she sees his presence.
    carl.accept_request(&anna_key).await.unwrap();
    // Handed to Carl's connection but not acknowledged: on its way, not confirmed.
    assert_eq!(
        wait_delivery(&anna, "hi carl, from a browser", "relayed").await,
        "sent"
    );
    let id = m.id.clone().expect("the page gives every message an id");
    assert_eq!(id.len(), 32, "16 random bytes in hex: {id}");
    // A reload keeps the line's state and the message's id (the page sends the unconfirmed
    // message again, which Carl's client recognises as a copy), so Carl's acknowledgement
    // still finds its line.
    assert_eq!(outbox_ids(&anna).await, vec![id.clone()], "kept in storage");
    assert_eq!(open(&anna, &url).await, anna_key);
    anna.click(&contact(&carl_key)).await.unwrap();
    wait_delivery(&anna, "hi carl, from a browser", "relayed").await;
    let answer = carl.ack(std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(answer.status, status::OK, "{answer:?}");
    assert_eq!(
        wait_delivery(&anna, "hi carl, from a browser", "delivered").await,
        "delivered ✓"
    );
    assert!(outbox_ids(&anna).await.is_empty(), "confirmed: forgotten");
    anna.wait_for(
        &format!("{}[data-online='true']", contact(&carl_key)),
        UI_WAIT,
    )
    .await
    .unwrap();

    // Native -> browser: Carl is a stranger to Ben. Ben reads the request, then blocks Carl,
    // whose next message is refused.
    carl.send_text("ben", "hi ben, from a terminal", &[])
        .await
        .unwrap();
    ben.wait_for(&request(&carl_key), UI_WAIT).await.unwrap();
    ben.click(&format!("{} .request-open", request(&carl_key)))
        .await
        .unwrap();
    ben.wait_text("#messages .message.in .text", UI_WAIT, |t| {
        t == "hi ben, from a terminal"
    })
    .await
    .unwrap();
    // Carl's client writes 1:1 with the static-key box: Ben's page says it is not forward
    // secret.
    ben.wait_text("#messages .message.in .weak", UI_WAIT, |t| {
        t == "not forward secret"
    })
    .await
    .unwrap();
    ben.click(&format!("{} .request-block", request(&carl_key)))
        .await
        .unwrap();
    let refused = loop {
        match carl.send_text("ben", "are you there?", &[]).await {
            Err(e) => break e.to_string(),
            // The block is on its way to the server: try again.
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(refused.contains("blocked"), "{refused}");

    // Presence: Carl leaves and Anna's list shows it.
    carl.close().await.unwrap();
    drop(carl);
    anna.wait_for(
        &format!("{}[data-online='false']", contact(&carl_key)),
        UI_WAIT,
    )
    .await
    .unwrap();

    // Screenshots of the two windows chatting, for the README (target/screenshots/).
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    anna.click(&contact(&ben_key)).await.unwrap();
    send(
        &anna,
        "hi ben! this one is end-to-end encrypted in your browser",
    )
    .await;
    ben.click(&contact(&anna_key)).await.unwrap();
    ben.wait_text("#messages", UI_WAIT, |t| {
        t.contains("end-to-end encrypted in your browser")
    })
    .await
    .unwrap();
    std::fs::write(shots.join("anna.png"), anna.screenshot().await.unwrap()).unwrap();
    std::fs::write(shots.join("ben.png"), ben.screenshot().await.unwrap()).unwrap();

    // A message sent while a browser is closed arrives when it comes back.
    ben.goto("about:blank").await.unwrap();
    anna.wait_for(
        &format!("{}[data-online='false']", contact(&ben_key)),
        UI_WAIT,
    )
    .await
    .unwrap();
    send(&anna, "sent while you were away").await;
    assert_eq!(
        wait_delivery(&anna, "sent while you were away", "stored").await,
        "stored"
    );
    assert_eq!(
        open(&ben, &url).await,
        ben_key,
        "Ben's identity survived closing the page"
    );
    ben.wait_text(&format!("{} .unread", contact(&anna_key)), UI_WAIT, |t| {
        t.trim() == "1"
    })
    .await
    .unwrap();
    ben.click(&contact(&anna_key)).await.unwrap();
    ben.wait_text("#messages", UI_WAIT, |t| {
        t.contains("sent while you were away")
    })
    .await
    .unwrap();
    // Ben's page acknowledged it; the stored message is now delivered on Anna's page, and
    // stays so across a reload.
    wait_delivery(&anna, "sent while you were away", "delivered").await;
    assert_eq!(open(&anna, &url).await, anna_key);
    anna.click(&contact(&ben_key)).await.unwrap();
    wait_delivery(&anna, "sent while you were away", "delivered").await;
    wait_delivery(
        &anna,
        "hi ben! this one is end-to-end encrypted in your browser",
        "delivered",
    )
    .await;

    // On a phone-sized screen the page still fits: no sideways scrolling, composer usable.
    ben.resize(390, 844).await.unwrap();
    let fits = ben
        .js(
            "return document.documentElement.scrollWidth <= window.innerWidth \
             && document.querySelector('#composer').getBoundingClientRect().width > 150",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, json!(true), "the page fits a phone-sized window");
    std::fs::write(shots.join("ben-phone.png"), ben.screenshot().await.unwrap()).unwrap();

    // The server goes away: the page says so, keeps what is written meanwhile as "sending…",
    // and reconnects by itself when the server is back, sending it then.
    let mut server = server;
    assert!(server.stop(), "server exits cleanly on SIGTERM");
    anna.wait_for("#conn-state[data-state=offline]", UI_WAIT)
        .await
        .unwrap();
    send(&anna, "written while the server was down").await;
    assert_eq!(
        wait_delivery(&anna, "written while the server was down", "sending").await,
        "sending…"
    );
    let server = server.restart_on_same_ports();
    anna.wait_for("#conn-state[data-state=online]", UI_WAIT)
        .await
        .unwrap();
    ben.wait_for("#conn-state[data-state=online]", UI_WAIT)
        .await
        .unwrap();
    ben.wait_text("#messages", UI_WAIT, |t| {
        t.contains("written while the server was down")
    })
    .await
    .unwrap();
    wait_delivery(&anna, "written while the server was down", "delivered").await;
    send(&anna, "still here after the restart").await;
    ben.wait_text("#messages", UI_WAIT, |t| {
        t.contains("still here after the restart")
    })
    .await
    .unwrap();
    wait_delivery(&anna, "still here after the restart", "delivered").await;
    assert_eq!(
        ben.text_of("#messages")
            .await
            .unwrap()
            .matches("written while the server was down")
            .count(),
        1,
        "shown once"
    );
    let log = server.logs();
    assert!(
        log.matches("authenticated").count() >= 2,
        "both pages logged in again"
    );

    anna.quit().await.unwrap();
    ben.quit().await.unwrap();
}

#[test]
fn a_browser_warns_about_a_contact_whose_key_changed_and_sends_only_after_trust() {
    on_a_big_stack("browser-pins", contact_key_scenario);
}

async fn contact_key_scenario() {
    let server = TestServer::start();
    let url = server.http.clone();
    let driver = Driver::start().await.unwrap();
    let anna = driver.browser(1100, 760).await.unwrap();
    open(&anna, &url).await;
    let bob_id = Identity::from_secret(new_key());
    let bob_key = bob_id.public_key();
    let mut bob = Client::connect(&server.tcp.to_string(), &bob_id, Some("bob"))
        .await
        .unwrap();
    // The first conversation with "bob" pins bob's key, in localStorage.
    open_conversation(&anna, "bob", &bob_key.to_hex()).await;
    send(&anna, "hello first bob").await;
    assert_eq!(next_message(&mut bob).await.text, "hello first bob");
    bob.close().await.unwrap();
    let saved_pins = || async {
        let pins = anna
            .js("return localStorage.getItem('flexim.contactPins');", vec![])
            .await
            .unwrap();
        pins.as_str().unwrap_or_default().to_string()
    };
    assert!(
        saved_pins()
            .await
            .contains(&format!("bob {}", bob_key.to_hex()))
    );

    // The server forgets its users (same key, fresh store) and another key takes "bob".
    let server = server.reinstall_on_same_ports(true);
    anna.wait_for("#conn-state[data-state=online]", UI_WAIT)
        .await
        .unwrap();
    let mallory_id = Identity::from_secret(new_key());
    let mallory_key = mallory_id.public_key();
    let mut mallory = Client::connect(&server.tcp.to_string(), &mallory_id, Some("bob"))
        .await
        .unwrap();

    // Looking "bob" up again: a warning with both fingerprints, and no conversation with the
    // new key under the alias.
    set_value(&anna, "#contact-input", "bob").await;
    anna.click("#contact-add").await.unwrap();
    let banner = anna
        .wait_text("#contact-warning-bob", UI_WAIT, |t| {
            t.contains("has changed")
        })
        .await
        .unwrap();
    assert!(banner.contains(&bob_key.fingerprint()), "{banner}");
    assert!(banner.contains(&mallory_key.fingerprint()), "{banner}");
    anna.wait_text("#contact-error", UI_WAIT, |t| t.contains("different key"))
        .await
        .unwrap();
    assert!(
        anna.find(&contact(&mallory_key.to_hex()))
            .await
            .unwrap()
            .is_none()
    );

    // Writing to bob's conversation is blocked until the user decides: no line, nothing sent.
    anna.click(&contact(&bob_key.to_hex())).await.unwrap();
    send(&anna, "should not go").await;
    anna.wait_text("#log", UI_WAIT, |t| t.contains("not sent"))
        .await
        .unwrap();
    let lines = anna.text_of("#messages").await.unwrap();
    assert!(!lines.contains("should not go"), "{lines}");
    let kept = anna
        .js("return document.querySelector('#composer').value;", vec![])
        .await
        .unwrap();
    assert_eq!(
        kept,
        json!("should not go"),
        "the text waits in the composer"
    );
    set_value(&anna, "#composer", "").await;

    // The explicit confirmation: the banner goes, the new key's conversation opens under the
    // alias, and messages go to it. The warning is at the top of the page, where the user
    // scrolls to read it (typing in the composer scrolled the page under the top bar).
    anna.js("window.scrollTo(0, 0);", vec![]).await.unwrap();
    anna.click("#contact-warning-bob .trust-contact-key")
        .await
        .unwrap();
    anna.wait_for(
        &format!("#conversation[data-key='{}']", mallory_key.to_hex()),
        UI_WAIT,
    )
    .await
    .unwrap();
    assert!(anna.find("#contact-warning-bob").await.unwrap().is_none());
    send(&anna, "hello new bob").await;
    assert_eq!(next_message(&mut mallory).await.text, "hello new bob");
    assert!(
        saved_pins()
            .await
            .contains(&format!("bob {}", mallory_key.to_hex()))
    );
    anna.quit().await.unwrap();
}
