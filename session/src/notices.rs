//! What the server sends unasked: presence, the other session, receipts and the server's
//! farewell (docs/PROTOCOL.md §5 and §8.1).

use flexim_protocol::{PublicKey, Status, status};

use crate::delivery::Delivery;
use crate::engine::Engine;
use crate::events::Event;
use crate::text::describe;

impl Engine {
    /// A Status the server sends unasked.
    pub(crate) fn on_notice(&mut self, s: Status) {
        match s.status {
            status::PRESENCE_ONLINE | status::PRESENCE_OFFLINE => {
                match PublicKey::from_hex(&s.payload) {
                    Some(key) => {
                        let online = s.status == status::PRESENCE_ONLINE;
                        if let Some(user) = self.users.get_mut(&key) {
                            user.online = Some(online);
                        }
                        self.emit(Event::Presence { key, online });
                    }
                    None => self.notice(format!("a presence notice without a key: {}", s.payload)),
                }
            }
            status::SESSION_EXISTS => self.emit(Event::SessionExists(s)),
            status::DELIVERED_STORED => self.notice(s.payload),
            status::DELIVERED | status::STORED_LATER | status::EXPIRED | status::NOT_KEPT => {
                self.on_receipt(s)
            }
            _ => self.emit(Event::Closing {
                status: s.status,
                reason: describe(&s),
            }),
        }
    }

    /// A receipt about messages this user sent: each one it names is settled for good (no need
    /// to send it again) and reported, also one confirmed before (stored, then delivered),
    /// since the application still wants to hear that it was delivered. `-24` NOT_KEPT is a
    /// receipt too, a failed one: the messages were relayed, then not kept, so they end as
    /// [`Delivery::Failed`] with the refusal in words.
    fn on_receipt(&mut self, s: Status) {
        let ids: Vec<String> = s.about().map(str::to_string).collect();
        if ids.is_empty() {
            // Without an id, EXPIRED tells this user how many messages for them the server
            // deleted unread ("N stored messages expired unread after 30 days").
            let text = if s.status == status::EXPIRED {
                s.payload
            } else {
                format!("a receipt without a message id: {}", describe(&s))
            };
            return self.notice(text);
        }
        let delivery = Delivery::from_status(&s);
        for id in ids {
            if self.outbox.remove(&id).is_some() {
                self.storage_changed = true;
            }
            let status = Status::new(s.status, s.payload.clone()).with_id(Some(id.clone()));
            self.emit(Event::Receipt {
                id,
                delivery: delivery.clone(),
                status,
            });
        }
    }
}
