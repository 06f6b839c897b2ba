//! A room in two real headless Chromium pages and the `flexim` CLI (docs/PROTOCOL.md §16):
//! consent first, then an MLS-encrypted room across WebSocket (the pages) and TCP (the CLI)
//! that all three see in one order with one safety number, a page that reloads and catches up
//! from the groups it saved, an offline CLI member catching up, a removal after which the
//! removed member gets nothing, a member leaving, and a stranger's invitation declined with a
//! block.

use std::time::{Duration, Instant};

use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;
use flexim_tests::webdriver::{Browser, Driver};
use flexim_tests::{TempDir, TestServer, flexim};
use serde_json::json;

use crate::browser::{UI_WAIT, on_a_big_stack, open, open_conversation, set_value};

/// The texts of the messages (not the notes) of `b`'s open room, in the order shown.
async fn room_texts(b: &Browser) -> Vec<String> {
    let v = b
        .js(
            "return [...document.querySelectorAll('#room-messages .message:not(.note) .text')] \
               .map(e => e.textContent);",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// Waits until `b`'s open room shows `text`; returns every text shown then.
async fn wait_said(b: &Browser, text: &str) -> Vec<String> {
    let deadline = Instant::now() + UI_WAIT;
    loop {
        let texts = room_texts(b).await;
        if texts.iter().any(|t| t == text) {
            return texts;
        }
        assert!(
            Instant::now() < deadline,
            "{text:?} never showed; the room shows {texts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until nothing matches `css` in `b`.
async fn wait_gone(b: &Browser, css: &str) {
    let deadline = Instant::now() + UI_WAIT;
    while b.find(css).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "{css} is still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `text` from `b`'s open room and waits until it is confirmed.
async fn say(b: &Browser, text: &str) {
    set_value(b, "#room-composer", text).await;
    b.click("#room-send").await.unwrap();
    let deadline = Instant::now() + UI_WAIT;
    loop {
        let state = b
            .js(
                "const line = [...document.querySelectorAll('#room-messages .message.out')] \
                   .find(m => m.querySelector('.text').textContent === arguments[0]); \
                 const d = line && line.querySelector('.delivery[data-state]'); \
                 return d ? d.getAttribute('data-state') : null;",
                vec![json!(text)],
            )
            .await
            .unwrap();
        if matches!(state.as_str(), Some("stored" | "relayed" | "delivered")) {
            return;
        }
        assert_ne!(state, json!("failed"), "{text:?} was refused");
        assert!(Instant::now() < deadline, "{text:?} shows {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Invites `who` (a key) into `b`'s open room and waits until the member list has it.
async fn invite(b: &Browser, who: &str) {
    set_value(b, "#room-invite-input", who).await;
    b.click("#room-invite").await.unwrap();
    b.wait_for(&format!("#room-members li[data-key='{who}']"), UI_WAIT)
        .await
        .unwrap();
}

/// The safety number `b` shows for its open room.
async fn safety(b: &Browser) -> String {
    b.text_of("#room-safety").await.unwrap().trim().to_string()
}

/// Runs the CLI as the user of `key` on `server`.
fn cli(args: &[&str], server: &str, key: &str) -> (i32, String, String) {
    let mut all = vec![args[0], "--server", server, "--key", key];
    all.extend_from_slice(&args[1..]);
    flexim(&all)
}

/// The room messages the CLI user of `key` receives within `secs` (at most `count`), as
/// (sender, text), from `listen --json`.
fn cli_heard(server: &str, key: &str, count: usize, secs: u32) -> Vec<(String, String)> {
    let (count, secs) = (count.to_string(), secs.to_string());
    let args = ["listen", "--json", "--count", &count, "--timeout", &secs];
    // A run that hears fewer than `count` ends with an error code when its time is up; what it
    // heard is what counts.
    let (_, out, _) = cli(&args, server, key);
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["room"].is_string())
        .map(|v| {
            let text = |f: &str| v[f].as_str().unwrap_or_default().to_string();
            (text("from"), text("msg"))
        })
        .collect()
}

#[test]
fn two_browsers_and_a_cli_hold_an_encrypted_room() {
    on_a_big_stack("browser-rooms", scenario);
}

async fn scenario() {
    let server = TestServer::start();
    let url = server.http.clone();
    let tcp = server.tcp.to_string();
    let driver = Driver::start().await.unwrap();
    let alice = driver.browser(1300, 900).await.unwrap();
    let bob = driver.browser(1300, 900).await.unwrap();
    let ak = open(&alice, &url).await;
    let bk = open(&bob, &url).await;
    let dir = TempDir::new("browser-rooms");
    let carol = dir.0.join("carol.key").to_str().unwrap().to_string();
    let (code, out, err) = flexim(&["keygen", "--out", &carol]);
    assert_eq!(code, 0, "{err}");
    let ck = out.trim().to_string();
    assert!(PublicKey::from_hex(&ck).is_some(), "{out}");

    // Consent first: the two pages ask each other to talk (each asking accepts the other),
    // and Carol accepts Alice from the CLI, which also publishes her KeyPackages.
    open_conversation(&alice, &bk, &bk).await;
    open_conversation(&bob, &ak, &ak).await;
    let (code, _, err) = cli(&["requests", "--accept", &ak], &tcp, &carol);
    assert_eq!(code, 0, "{err}");

    // Alice creates the room and invites Bob; his page lists it as an invitation.
    alice.click("#room-create").await.unwrap();
    alice
        .wait_for("#room:not([hidden])[data-room]", UI_WAIT)
        .await
        .unwrap();
    let room = alice.attr("#room", "data-room").await.unwrap().unwrap();
    assert!(RoomId::parse(&room).is_some(), "the panel names the room");
    alice
        .wait_for(&format!("#rooms li.room[data-room='{room}']"), UI_WAIT)
        .await
        .unwrap();
    assert!(
        alice.find("#conversation[hidden]").await.unwrap().is_some(),
        "the room takes the conversation's place"
    );
    invite(&alice, &bk).await;
    let invited = format!("#rooms li.room[data-room='{room}'][data-invited='true']");
    bob.wait_for(&invited, UI_WAIT).await.unwrap();
    bob.click(&invited).await.unwrap();
    bob.wait_for("#room-invitation:not([hidden])", UI_WAIT)
        .await
        .unwrap();
    bob.click("#room-accept").await.unwrap();
    bob.wait_for(
        &format!("#rooms li.room[data-room='{room}'][data-invited='false']"),
        UI_WAIT,
    )
    .await
    .unwrap();

    // Carol is invited too; her CLI hears of it in one run and accepts in the next.
    invite(&alice, &ck).await;
    let (code, _, err) = cli(&["listen", "--timeout", "1"], &tcp, &carol);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("invited you to room"), "{err}");
    let (code, _, err) = cli(&["room", "accept", &room], &tcp, &carol);
    assert_eq!(code, 0, "{err}");
    bob.wait_for(&format!("#room-members li[data-key='{ck}']"), UI_WAIT)
        .await
        .unwrap();

    // Messages from all three, while Carol's CLI is not running: she catches up afterwards.
    say(&alice, "hello from alice").await;
    wait_said(&bob, "hello from alice").await;
    say(&bob, "hello from bob").await;
    wait_said(&alice, "hello from bob").await;
    let (code, _, err) = cli(&["room", "say", &room, "hello from carol"], &tcp, &carol);
    assert_eq!(code, 0, "{err}");
    let alice_saw = wait_said(&alice, "hello from carol").await;
    let bob_saw = wait_said(&bob, "hello from carol").await;
    let order = ["hello from alice", "hello from bob", "hello from carol"];
    assert_eq!(alice_saw, order, "Alice's order");
    assert_eq!(bob_saw, order, "Bob's order");
    let heard = cli_heard(&tcp, &carol, 2, 10);
    assert_eq!(
        heard,
        [
            (ak.clone(), "hello from alice".to_string()),
            (bk.clone(), "hello from bob".to_string()),
        ],
        "Carol catches up in the room's order, each line from its sender"
    );
    // The server saw only ciphertext, and every member has the same safety number.
    let a_safety = safety(&alice).await;
    assert_eq!(a_safety.split_whitespace().count(), 8, "{a_safety}");
    assert_eq!(safety(&bob).await, a_safety);
    let (_, carol_view, _) = cli(&["room", "members", &room], &tcp, &carol);
    assert!(
        carol_view.contains(&format!("safety number {a_safety}")),
        "{carol_view}"
    );
    let fp = PublicKey::from_hex(&ck).unwrap().fingerprint();
    let member = format!("#room-members li[data-key='{ck}'] .member-fingerprint");
    assert_eq!(alice.text_of(&member).await.unwrap().trim(), fp);

    // Bob's page goes away; what is said meanwhile reaches it after a reload, opened with the
    // group state it saved in the browser.
    bob.goto("about:blank").await.unwrap();
    say(&alice, "while bob was away").await;
    open(&bob, &url).await;
    let pick = format!("#rooms li.room[data-room='{room}']");
    bob.wait_for(&pick, UI_WAIT).await.unwrap();
    bob.click(&pick).await.unwrap();
    let after_reload = wait_said(&bob, "while bob was away").await;
    assert_eq!(&after_reload[..3], order, "the earlier lines were kept");

    // What the room looks like, for people reading the docs (target/screenshots/).
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(shots.join("room.png"), alice.screenshot().await.unwrap()).unwrap();

    // Alice (the admin) removes Carol: Carol is told, and hears nothing more.
    alice
        .click(&format!(
            "#room-members button.room-remove[data-key='{ck}']"
        ))
        .await
        .unwrap();
    wait_gone(&alice, &format!("#room-members li[data-key='{ck}']")).await;
    wait_gone(&bob, &format!("#room-members li[data-key='{ck}']")).await;
    let (_, _, err) = cli(&["listen", "--timeout", "2"], &tcp, &carol);
    assert!(err.contains("removed you from room"), "{err}");
    say(&alice, "after carol").await;
    wait_said(&bob, "after carol").await;
    assert!(cli_heard(&tcp, &carol, 1, 2).is_empty(), "Carol heard more");
    let (code, _, err) = cli(&["room", "say", &room, "still here?"], &tcp, &carol);
    assert_ne!(code, 0, "a removed member could still send: {err}");
    assert!(!room_texts(&bob).await.contains(&"still here?".to_string()));

    // Bob leaves: his page forgets the room, and Alice's group drops him.
    bob.click("#room-leave").await.unwrap();
    wait_gone(&bob, &pick).await;
    wait_gone(&alice, &format!("#room-members li[data-key='{bk}']")).await;

    // A stranger's invitation (Carol is no contact of Bob's) is declined with a block: the
    // room goes, and nothing of Carol's reaches Bob from then on.
    let (code, out, err) = cli(&["room", "create"], &tcp, &carol);
    assert_eq!(code, 0, "{err}");
    let other = out.trim().to_string();
    let (code, out, err) = cli(&["room", "invite", &other, &bk], &tcp, &carol);
    assert_eq!(code, 0, "{out}{err}");
    let stranger = format!("#rooms li.room[data-room='{other}'][data-invited='true']");
    bob.wait_for(&stranger, UI_WAIT).await.unwrap();
    bob.click(&stranger).await.unwrap();
    bob.wait_for("#room-invitation:not([hidden])", UI_WAIT)
        .await
        .unwrap();
    bob.click("#room-block").await.unwrap();
    wait_gone(&bob, &stranger).await;
    let deadline = Instant::now() + UI_WAIT;
    loop {
        let args = ["send", "--to", &bk, "let me in"];
        let (code, out, err) = cli(&args, &tcp, &carol);
        if code != 0 && err.contains("blocked") {
            break;
        }
        // The block is a request of its own: a send that overtook it may still pass.
        assert!(
            Instant::now() < deadline,
            "Carol is not blocked: {out}{err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        alice
            .console()
            .await
            .unwrap()
            .iter()
            .all(|l| !l.contains("flexim stopped")),
        "the page panicked"
    );
}
