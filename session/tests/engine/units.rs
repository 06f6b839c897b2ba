//! The small rules on their own: the pin check, the de-duplication window, the saved form's
//! hex.

use flexim_session::PinCheck;
use flexim_session::dedupe::{DEDUP_WINDOW, Dedupe, message_key};
use flexim_session::login::check_pin;
use flexim_session::outbox::unhex;

use crate::kit::*;

#[test]
fn pin_check_detects_a_changed_server_key() {
    let s1 = key(1).public_key();
    let s2 = key(2).public_key();
    assert_eq!(check_pin(None, &s1), PinCheck::FirstUse);
    assert_eq!(check_pin(Some(&s1), &s1), PinCheck::Match);
    assert_eq!(check_pin(Some(&s1), &s2), PinCheck::Mismatch { pinned: s1 });
}

#[test]
fn dedupe_remembers_a_bounded_window() {
    let mut d = Dedupe::new();
    assert!(d.insert("a".into()));
    assert!(!d.insert("a".into()), "a copy");
    assert!(d.contains("a"));
    for i in 0..DEDUP_WINDOW {
        d.insert(format!("n{i}"));
    }
    assert_eq!(d.len(), DEDUP_WINDOW);
    assert!(!d.contains("a"), "the oldest is forgotten first");
    assert!(d.remove("n5") && !d.contains("n5") && d.len() == DEDUP_WINDOW - 1);
    // The key holds the start of the box: the version byte, the nonce, a little ciphertext.
    let key = message_key(&key(1).public_key(), 5, &"A".repeat(100));
    assert!(key.ends_with(&"A".repeat(44)) && !key.ends_with(&"A".repeat(45)));
}

#[test]
fn saved_frames_are_hex_of_either_case() {
    assert_eq!(unhex("0aFf"), Some(vec![10, 255]));
    assert_eq!(unhex("+f"), None);
    assert_eq!(unhex("abc"), None);
}
