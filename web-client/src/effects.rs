//! The effect runner: what the model asks for, done with the page, the storage and the engine.

use flexim_protocol::PublicKey;

use crate::app::App;
use crate::model::Effect;
use crate::storage;

impl App {
    /// Carries out one effect of [`crate::model::Model::apply`].
    pub(crate) fn run(&mut self, effect: Effect) {
        match effect {
            Effect::Log(text) => self.ui.log(&text),
            Effect::AliasResult { text, ok } => self.ui.set_alias_result(&text, ok),
            Effect::ContactError(text) => self.ui.set_contact_error(&text),
            Effect::ClearContactInput => self.ui.contact_input.set_value(""),
            Effect::FocusComposer if self.model.rooms.open_id().is_some() => {
                self.rooms_ui.focus_composer()
            }
            Effect::FocusComposer => self.ui.focus_composer(),
            room @ (Effect::AskMembers(_) | Effect::Invite { .. } | Effect::RoomError(_)) => {
                self.run_room_effect(room)
            }
            Effect::StoreAlias(Some(alias)) => {
                if let Err(e) = self.store.set(storage::ALIAS, &alias) {
                    self.ui
                        .log(&format!("the alias could not be remembered: {e}"));
                }
            }
            Effect::StoreAlias(None) => self.store.remove(storage::ALIAS),
            Effect::StoreServerKey(key) => self.pin(&key),
            Effect::ShowRoster(empty) => {
                let me = *self.engine.me();
                self.ui
                    .show_users(&self.ui.roster, &self.model.roster, &me, &empty);
            }
            Effect::ShowSearch(empty) => {
                let me = *self.engine.me();
                self.ui
                    .show_users(&self.ui.search_results, &self.model.search, &me, &empty);
            }
            Effect::SearchNote(text) => self.ui.show_list_note(&self.ui.search_results, &text),
            Effect::Notify { from, text } => self.notify(&from, &text),
            // A request that cannot go out now (the connection just ended) is not needed
            // then: the next login asks again.
            Effect::ShowRequests => {
                let model = &self.model;
                crate::requests_ui::show_requests(
                    &self.ui.requests,
                    &self.ui.requests_empty,
                    &model.requests,
                    |k| model.name_of(k),
                );
            }
            Effect::AskRequests => {
                let _ = self.engine.requests();
            }
            Effect::AskToTalk(key) => {
                let _ = self.engine.ask_to_talk(&key.to_hex());
            }
            Effect::AskRoster => {
                let _ = self.engine.roster();
            }
            Effect::AskUser { query, purpose } => {
                let _ = self.engine.get_user(&query, purpose);
            }
            Effect::AskGhost => {
                let _ = self.engine.ghost();
            }
            Effect::Acknowledge(id) => self.engine.acknowledge(&id),
            Effect::Fail(reason) => self.on_closed(&reason),
        }
    }

    /// Saves the server's key as the pin.
    fn pin(&mut self, key: &PublicKey) {
        match self.store.set(storage::SERVER_KEY, &key.to_hex()) {
            Ok(()) => self.ui.log("the server's key is pinned"),
            Err(e) => self
                .ui
                .log(&format!("the server's key could not be pinned: {e}")),
        }
    }
}
