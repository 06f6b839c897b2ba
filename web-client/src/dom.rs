//! Small helpers over `web-sys` that the rest of the browser code shares.
//!
//! Every lookup that can fail in a browser (no `window`, an id missing from the page) returns
//! an `Option` or a `Result` here: a panic in WebAssembly kills the whole module, while a
//! missing element should at worst disable one feature.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{Document, Element, Event, EventTarget, HtmlElement, Window};

/// The page's window. The module only ever runs in a page, where there always is one.
pub(crate) fn window() -> Option<Window> {
    web_sys::window()
}

/// The page's document.
pub(crate) fn document() -> Option<Document> {
    window()?.document()
}

/// The element with `id`, as type `T` (for instance `HtmlInputElement`).
pub(crate) fn by_id<T: JsCast>(id: &str) -> Result<T, String> {
    document()
        .and_then(|d| d.get_element_by_id(id))
        .ok_or_else(|| format!("the page has no element #{id}"))?
        .dyn_into::<T>()
        .map_err(|_| format!("#{id} is not the kind of element expected"))
}

/// A new element `<tag class="class">`, or `None` if the document is gone.
pub(crate) fn element(tag: &str, class: &str) -> Option<Element> {
    let el = document()?.create_element(tag).ok()?;
    if !class.is_empty() {
        el.set_class_name(class);
    }
    Some(el)
}

/// A new element with a class and text. Text always goes in as text, never as HTML, so that
/// nothing a peer or the server sends can inject markup into the page.
pub(crate) fn text_element(tag: &str, class: &str, text: &str) -> Option<Element> {
    let el = element(tag, class)?;
    el.set_text_content(Some(text));
    Some(el)
}

/// Sets an element's text, leaving the DOM untouched when it is already right (so that
/// repeated renders do not disturb a selection or a screen reader).
pub(crate) fn set_text(el: &Element, text: &str) {
    if el.text_content().as_deref() != Some(text) {
        el.set_text_content(Some(text));
    }
}

/// Sets an attribute unless it already has that value.
pub(crate) fn set_attr(el: &Element, name: &str, value: &str) {
    if el.get_attribute(name).as_deref() != Some(value) {
        let _ = el.set_attribute(name, value);
    }
}

/// Shows or hides an element with the `hidden` attribute.
pub(crate) fn set_hidden(el: &Element, hidden: bool) {
    if let Some(html) = el.dyn_ref::<HtmlElement>()
        && html.hidden() != hidden
    {
        html.set_hidden(hidden);
    }
}

/// Adds or removes a class.
pub(crate) fn set_class(el: &Element, class: &str, on: bool) {
    let list = el.class_list();
    if list.contains(class) != on {
        let _ = if on {
            list.add_1(class)
        } else {
            list.remove_1(class)
        };
    }
}

/// Calls `handler` on every `event` at `target` for the rest of the page's life. The
/// closure is handed to JavaScript for good (`forget`): these listeners live as long as the
/// page, so there is nothing to free.
pub(crate) fn listen(target: &EventTarget, event: &str, handler: impl FnMut(Event) + 'static) {
    let closure = Closure::<dyn FnMut(Event)>::new(handler);
    if target
        .add_event_listener_with_callback(event, closure.as_ref().unchecked_ref())
        .is_err()
    {
        log_error(&format!("could not listen to {event}"));
    }
    closure.forget();
}

/// Runs `f` once after `ms` milliseconds; returns the timer id for [`clear_timeout`].
pub(crate) fn set_timeout(ms: u32, f: impl FnOnce() + 'static) -> Option<i32> {
    // `once_into_js` gives the closure to JavaScript, which frees it after the call.
    let callback = Closure::once_into_js(f);
    window()?
        .set_timeout_with_callback_and_timeout_and_arguments_0(
            callback.unchecked_ref(),
            i32::try_from(ms).unwrap_or(i32::MAX),
        )
        .ok()
}

/// Cancels a timer from [`set_timeout`].
pub(crate) fn clear_timeout(id: i32) {
    if let Some(w) = window() {
        w.clear_timeout_with_handle(id);
    }
}

/// A Unix time as the local time of day (`14:05`), or the date and time when it is not
/// today, so that messages delivered after days offline say when they were written.
pub(crate) fn format_time(secs: i64) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(secs as f64 * 1000.0));
    let today = js_sys::Date::new_0();
    let time = format!("{:02}:{:02}", date.get_hours(), date.get_minutes());
    if date.get_full_year() == today.get_full_year()
        && date.get_month() == today.get_month()
        && date.get_date() == today.get_date()
    {
        time
    } else {
        format!(
            "{}-{:02}-{:02} {time}",
            date.get_full_year(),
            date.get_month() + 1,
            date.get_date()
        )
    }
}

/// Whether the page is hidden (a background tab or a minimised window).
pub(crate) fn page_hidden() -> bool {
    document().map(|d| d.hidden()).unwrap_or(false)
}

/// Whether the window is phone-sized, where the layout is a single column.
pub(crate) fn is_narrow() -> bool {
    window()
        .and_then(|w| w.inner_width().ok())
        .and_then(|v| v.as_f64())
        .is_some_and(|w| w < 700.0)
}

/// Writes an error to the browser console.
pub(crate) fn log_error(text: &str) {
    web_sys::console::error_1(&JsValue::from_str(text));
}

/// The element an event happened on, or its closest ancestor matching `selector`.
pub(crate) fn closest(event: &Event, selector: &str) -> Option<Element> {
    event
        .target()?
        .dyn_into::<Element>()
        .ok()?
        .closest(selector)
        .ok()
        .flatten()
}
