//! The warnings about contacts whose key changed: one banner per alias, with both
//! fingerprints and a button to trust the new key. They exist in the page only while the
//! change waits for the user, like the server-key warning in `ui.rs`.

use flexim_protocol::keys::alias_key;
use flexim_session::KeyChange;
use web_sys::Element;

use crate::dom::{element, text_element};

/// The id of the banner about `alias`.
fn banner_id(alias: &str) -> String {
    format!("contact-warning-{}", alias_key(alias))
}

/// Makes the banners in `slot` those of `warnings`: a banner for each new one, none for those
/// decided. A banner already shown is left as it is, so that a click in flight lands.
pub(crate) fn sync_contact_warnings(slot: &Element, warnings: &[KeyChange]) {
    let wanted: Vec<String> = warnings.iter().map(|w| banner_id(&w.alias)).collect();
    if let Ok(shown) = slot.query_selector_all(".contact-warning") {
        for i in 0..shown.length() {
            if let Some(el) = shown
                .get(i)
                .and_then(|n| wasm_bindgen::JsCast::dyn_into::<Element>(n).ok())
                && !wanted.contains(&el.id())
            {
                el.remove();
            }
        }
    }
    let document = crate::dom::document();
    for (warning, id) in warnings.iter().zip(&wanted) {
        let present = document
            .as_ref()
            .and_then(|d| d.get_element_by_id(id))
            .is_some();
        if !present && let Some(banner) = build(warning, id) {
            let _ = slot.append_child(&banner);
        }
    }
}

/// The banner about one change.
fn build(change: &KeyChange, id: &str) -> Option<Element> {
    let alias = &change.alias;
    let banner = element("div", "banner warning contact-warning")?;
    banner.set_id(id);
    banner.set_attribute("role", "alert").ok()?;
    let parts = [
        text_element("strong", "", &format!("The key of “{alias}” has changed."))?,
        text_element(
            "p",
            "",
            &format!(
                "The server now says “{alias}” is another key than the one this browser pinned \
                 the first time. Either {alias} made a new key, or someone (the server, or \
                 someone in the middle) is posing as {alias}. Nothing is sent to {alias} until \
                 you decide: compare the new fingerprint with {alias} in person or by phone \
                 first."
            ),
        )?,
        text_element(
            "p",
            "fp",
            &format!("Pinned: {}", change.pinned.fingerprint()),
        )?,
        text_element(
            "p",
            "fp",
            &format!("Now:    {}", change.presented.fingerprint()),
        )?,
    ];
    for part in &parts {
        let _ = banner.append_child(part);
    }
    let button = element("button", "danger trust-contact-key")?;
    button.set_attribute("type", "button").ok()?;
    button.set_attribute("data-alias", alias).ok()?;
    button.set_text_content(Some("Trust the new key"));
    let _ = banner.append_child(&button);
    Some(banner)
}
