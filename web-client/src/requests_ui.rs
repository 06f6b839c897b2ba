//! `#requests`: the strangers who asked to talk, each with its fingerprint and three buttons
//! (Accept, Decline, Block). Clicking the name opens what they wrote.

use flexim_protocol::PublicKey;
use web_sys::Element;

use crate::dom::{element, set_hidden, text_element};
use crate::state::{Waiting, short_fingerprint};

/// What a button of a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestAction {
    /// Accept: the stranger becomes a contact.
    Accept,
    /// Decline: its messages are refused from now on.
    Decline,
    /// Block: nothing from it reaches this user, and it does not see this user's presence.
    Block,
}

impl RequestAction {
    /// The action a button's class names.
    pub(crate) fn of_class(class: &str) -> Option<RequestAction> {
        class.split_whitespace().find_map(|c| match c {
            "request-accept" => Some(RequestAction::Accept),
            "request-decline" => Some(RequestAction::Decline),
            "request-block" => Some(RequestAction::Block),
            _ => None,
        })
    }
}

/// Fills `#requests` with one `li.request` per stranger (`data-key` its key), and shows the
/// hint when nobody waits.
pub(crate) fn show_requests(
    list: &Element,
    empty: &Element,
    waiting: &[Waiting],
    name: impl Fn(&PublicKey) -> String,
) {
    list.set_text_content(None);
    for w in waiting {
        if let Some(li) = build_request(w, &name(&w.key)) {
            let _ = list.append_child(&li);
        }
    }
    set_hidden(empty, !waiting.is_empty());
}

fn build_request(w: &Waiting, name: &str) -> Option<Element> {
    let li = element("li", "request")?;
    li.set_attribute("data-key", &w.key.to_hex()).ok()?;
    let open = element("span", "request-open")?;
    open.set_attribute("tabindex", "0").ok()?;
    open.set_attribute("role", "button").ok()?;
    let name_el = text_element("span", "user-name", name)?;
    let key_el = text_element("span", "contact-key", &short_fingerprint(&w.key))?;
    let _ = open.append_child(&name_el);
    let _ = open.append_child(&key_el);
    let _ = li.append_child(&open);
    let buttons = element("span", "request-buttons")?;
    for (class, label) in [
        ("request-accept", "Accept"),
        ("request-decline", "Decline"),
        ("request-block", "Block"),
    ] {
        let b = text_element("button", &format!("small {class}"), label)?;
        b.set_attribute("type", "button").ok()?;
        b.set_attribute("data-key", &w.key.to_hex()).ok()?;
        let _ = buttons.append_child(&b);
    }
    let _ = li.append_child(&buttons);
    Some(li)
}
