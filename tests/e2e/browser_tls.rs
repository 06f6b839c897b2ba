//! The browser client over https and wss, in real headless Chromium: the page loads under its
//! Content-Security-Policy without a single violation, logs in over wss, and chats with a
//! native client that is on wss too.
//!
//! Chromium is told to accept exactly the test's certificate with
//! `--ignore-certificate-errors-spki-list` (the SHA-256 of the leaf's public key): unlike
//! `--ignore-certificate-errors` it leaves every other certificate checked, and unlike adding
//! the CA to a certificate database it needs no tools and changes nothing outside the
//! browser's own profile (the flag works only with `--user-data-dir`, which every test
//! browser has).

use std::path::Path;

use flexim_client::{Client, Endpoint, Identity, Trust};
use flexim_protocol::PublicKey;
use flexim_tests::certs::TestCerts;
use flexim_tests::webdriver::Driver;
use flexim_tests::{Options, TestServer, new_key};
use serde_json::json;

use crate::browser::{UI_WAIT, next_message, on_a_big_stack, open, open_conversation, send};

#[test]
fn a_browser_logs_in_and_chats_over_https_and_wss() {
    on_a_big_stack("browser-tls-scenario", scenario);
}

/// The console lines that report a Content-Security-Policy violation.
fn violations(console: &[String]) -> Vec<&String> {
    console
        .iter()
        .filter(|line| line.contains("Content Security Policy"))
        .collect()
}

async fn scenario() {
    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../static/pkg/flexim_web.js");
    assert!(
        bundle.exists(),
        "the browser bundle is missing: run `just build-web` (or `just test`) first"
    );
    let certs = TestCerts::new();
    let server = TestServer::launch(Options {
        tls: Some(certs.tls.clone()),
        ..Options::default()
    })
    .unwrap();
    assert!(server.http.starts_with("https://"), "{}", server.http);
    let driver = Driver::start().await.unwrap();
    let trust = format!(
        "--ignore-certificate-errors-spki-list={}",
        certs.leaf_spki_sha256
    );
    let page = driver.browser_with_args(1100, 760, &[trust]).await.unwrap();

    // The page comes over https and logs in over wss.
    let page_key = open(&page, &server.http).await;
    let secure = page
        .js(
            "return [location.protocol, window.isSecureContext];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(secure, json!(["https:", true]));
    let server_fp = PublicKey::from_hex(&server.key).unwrap().fingerprint();
    assert_eq!(
        page.text_of("#server-fingerprint").await.unwrap().trim(),
        server_fp
    );

    // A native client on wss, trusting the test's CA.
    let carl_id = Identity::from_secret(new_key());
    let carl_key = carl_id.public_key().to_hex();
    let endpoint = Endpoint::parse(&server.ws)
        .unwrap()
        .trusting(Trust::from_ca_file(&certs.tls.ca).unwrap())
        .unwrap();
    let options = flexim_client::ConnectOptions {
        alias: Some("carl".into()),
        server_key: None,
        contact_pins: Default::default(),
        ..Default::default()
    };
    let mut carl = Client::connect_with(endpoint, &carl_id, options)
        .await
        .unwrap();

    // Browser -> native, then native -> browser.
    open_conversation(&page, &carl_key, &carl_key).await;
    send(&page, "hello carl, over wss").await;
    let m = next_message(&mut carl).await;
    assert_eq!(m.text, "hello carl, over wss");
    assert_eq!(m.from.to_hex(), page_key);
    carl.send_text(&page_key, "hello browser, over wss too", &[])
        .await
        .unwrap();
    page.wait_text("#messages .message.in .text", UI_WAIT, |t| {
        t == "hello browser, over wss too"
    })
    .await
    .unwrap();

    // Nothing the page did broke the policy. That this says something is shown next: the
    // browser enforces the policy it got, and such a violation does reach the console.
    let console = page.console().await.unwrap();
    assert_eq!(violations(&console), Vec::<&String>::new(), "{console:#?}");
    let ran = page
        .js(
            "const s = document.createElement('script'); \
             s.textContent = 'window.inlineRan = true;'; \
             document.head.appendChild(s); \
             return window.inlineRan === true;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(ran, json!(false), "an inline script ran despite the policy");
    let console = page.console().await.unwrap();
    assert!(!violations(&console).is_empty(), "{console:#?}");
}
