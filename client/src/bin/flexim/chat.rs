//! `flexim chat`: an interactive conversation in the terminal.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead as _};
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use flexim_client::protocol::keys::validate_alias;
use flexim_client::protocol::status;
use flexim_client::protocol::{PublicKey, Status, User};
use flexim_client::{Answer, Client, ClientError, Delivery, Event, Received};

use crate::connect::{connect, lost};
use crate::format::{
    aliases_suffix, describe, format_time, print_user_details, receipt_line, short_id, short_key,
    snippet,
};
use crate::pins::{Pins, contact_changed};
use crate::{CHAT_HELP, ChatArgs};

/// What the chat loop does after a line.
#[derive(PartialEq, Eq)]
enum Flow {
    /// Keep going.
    Continue,
    /// Leave the chat.
    Quit,
}

/// The interactive chat's state.
struct Chat {
    /// The connection.
    client: Client,
    /// The current contact: how the user named it, and its key.
    current: Option<(String, PublicKey)>,
    /// Keys whose fingerprint has been shown already.
    seen: HashSet<PublicKey>,
    /// Messages sent in this chat, by id: to whom (as shown) and the start of the text, to
    /// say which message a receipt is about. An entry goes once the message is delivered.
    sent: HashMap<String, (String, String)>,
    /// Whether a failed ACK has been reported, so that a server refusing them is not reported
    /// for every message.
    ack_warned: bool,
    /// Where the contacts' keys are kept (saved after every line and event that changed them).
    pins: Pins,
}

pub(crate) async fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let (client, pins) = connect(&args.conn).await?;
    let me = client.me();
    println!(
        "you are {}{}",
        me.key.fingerprint(),
        aliases_suffix(&me.aliases)
    );
    println!(
        "server  {} at {}",
        client.server().key.fingerprint(),
        client.endpoint()
    );
    let mut chat = Chat {
        client,
        current: None,
        seen: HashSet::from([me.key]),
        sent: HashMap::new(),
        ack_warned: false,
        pins,
    };
    if let Some(to) = &args.to {
        let result = chat.switch(to).await;
        chat.run(result)?;
    }
    println!("type /help for commands");
    let ended = chat.converse(stdin_lines()).await;
    if ended.is_err() {
        chat.warn_unconfirmed();
    }
    ended?;
    let _ = chat.client.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Lines of stdin, read on a plain thread. A blocking read cannot be cancelled, so it must not
/// live inside the runtime; the thread simply dies with the process. The channel closes at
/// end of input.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<io::Result<String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                break;
            }
        }
    });
    rx
}

impl Chat {
    /// Reads lines and events until the user leaves (`Ok`) or the connection is lost.
    async fn converse(
        &mut self,
        mut lines: tokio::sync::mpsc::Receiver<io::Result<String>>,
    ) -> anyhow::Result<()> {
        loop {
            // Both futures are cancel-safe (a channel receive, and `next_event`, which keeps
            // partial input in the client), so whichever loses the race loses nothing.
            tokio::select! {
                line = lines.recv() => match line {
                    Some(Ok(line)) => {
                        let flow = self.line(&line).await;
                        self.pins.save(&mut self.client);
                        if flow? == Flow::Quit {
                            return Ok(());
                        }
                    }
                    None => return Ok(()),
                    Some(Err(e)) => return Err(anyhow!(e).context("cannot read stdin")),
                },
                event = self.client.next_event() => {
                    let handled = self.event(event).await;
                    self.pins.save(&mut self.client);
                    handled?;
                }
            }
        }
    }

    /// After the chat ended on an error, lists the messages sent here that the server had not
    /// confirmed: those may not have reached their recipients.
    fn warn_unconfirmed(&self) {
        let outbox = self.client.outbox();
        if outbox.is_empty() {
            return;
        }
        println!(
            "* {} sent message(s) not confirmed before the end; they may not have arrived:",
            outbox.len()
        );
        for id in outbox.ids() {
            match self.sent.get(id) {
                Some((to, text)) => println!("*   to {to}: {text}"),
                None => println!("*   message {}", short_id(id)),
            }
        }
    }

    /// Prints a command's error unless the connection is gone, which ends the chat.
    fn run(&self, result: Result<(), ClientError>) -> anyhow::Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.is_connection_lost() => Err(lost(&self.client, e)),
            Err(ClientError::ContactKeyChanged(change)) => {
                let accept = format!("/trust {}", change.alias);
                let text = contact_changed(&change, self.pins.contacts_path(), &accept);
                println!("error: refusing: {text}");
                Ok(())
            }
            Err(e) => {
                println!("error: {e}");
                Ok(())
            }
        }
    }

    /// An alias if one is known, else the short key.
    fn name_of(&self, key: &PublicKey) -> String {
        self.client
            .cached_user(key)
            .and_then(|u| u.aliases.first().cloned())
            .unwrap_or_else(|| short_key(key))
    }

    /// Handles one line of input.
    async fn line(&mut self, line: &str) -> anyhow::Result<Flow> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Ok(Flow::Continue);
        }
        if let Some(text) = line.strip_prefix("//") {
            let text = format!("/{text}");
            let result = self.say(&text).await;
            self.run(result)?;
            return Ok(Flow::Continue);
        }
        let Some(command) = line.strip_prefix('/') else {
            let result = self.say(line).await;
            self.run(result)?;
            return Ok(Flow::Continue);
        };
        let (name, rest) = command
            .split_once(char::is_whitespace)
            .map(|(n, r)| (n, r.trim()))
            .unwrap_or((command, ""));
        let result = match (name, rest) {
            ("quit" | "exit", _) => return Ok(Flow::Quit),
            ("help", _) => {
                println!("{CHAT_HELP}");
                Ok(())
            }
            ("to", who) if !who.is_empty() => self.switch(who).await,
            ("msg", args) if args.split_once(char::is_whitespace).is_some() => {
                let (who, text) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
                self.send_to(who, text.trim_start()).await
            }
            ("roster", _) => match self.client.roster().await {
                Ok(users) => {
                    self.print_users(&users);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            ("search", text) if !text.is_empty() => match self.client.search(text).await {
                Ok(users) => {
                    self.print_users(&users);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            ("whois", who) if !who.is_empty() => self.whois(who).await,
            ("register", alias) if !alias.is_empty() => {
                if let Err(e) = validate_alias(alias) {
                    println!("error: {e}");
                    Ok(())
                } else {
                    self.client
                        .register(alias)
                        .await
                        .map(|s| println!("* {}", describe(&s)))
                }
            }
            ("trust", alias) if !alias.is_empty() => self.trust(alias).await,
            ("requests", _) => crate::requests::show_requests(&mut self.client).await,
            ("ask" | "accept" | "decline" | "block" | "unblock", who) if !who.is_empty() => {
                match crate::requests::consent(&mut self.client, name, who).await {
                    Some(Ok(line)) => {
                        println!("{line}");
                        Ok(())
                    }
                    Some(Err(e)) => Err(e),
                    None => Ok(()),
                }
            }
            ("room" | "rooms", args) => {
                let mut words: Vec<&str> = args.split_whitespace().collect();
                if name == "rooms" {
                    words = vec!["list"];
                }
                match crate::room::command(&mut self.client, &words).await {
                    Ok(lines) => {
                        for line in lines {
                            println!("* {line}");
                        }
                        Ok(())
                    }
                    Err(e) if e.is_connection_lost() => Err(e),
                    Err(e) => {
                        println!("error: {e}");
                        Ok(())
                    }
                }
            }
            ("ghost", _) => self
                .client
                .ghost()
                .await
                .map(|s| println!("* {}", describe(&s))),
            (
                "to" | "msg" | "search" | "whois" | "register" | "trust" | "ask" | "accept"
                | "decline" | "block" | "unblock",
                _,
            ) => {
                println!("error: /{name} needs an argument; /help lists the commands");
                Ok(())
            }
            _ => {
                println!("error: unknown command /{name}; /help lists the commands");
                Ok(())
            }
        };
        self.run(result)?;
        Ok(Flow::Continue)
    }

    /// Sends a plain line to the current contact.
    async fn say(&mut self, text: &str) -> Result<(), ClientError> {
        let Some((_, key)) = self.current.clone() else {
            println!("error: no current contact; use /to WHO first, or /msg WHO TEXT");
            return Ok(());
        };
        let answer = self.client.send_text(&key.to_hex(), text, &[]).await?;
        let name = self.name_of(&key);
        self.note_sent(&answer, name, text);
        println!("  ({})", status::name(answer.status));
        Ok(())
    }

    /// `/msg WHO TEXT`.
    async fn send_to(&mut self, who: &str, text: &str) -> Result<(), ClientError> {
        let answer = self.client.send_text(who, text, &[]).await?;
        self.note_sent(&answer, who.to_string(), text);
        println!("  ({} to {who})", status::name(answer.status));
        Ok(())
    }

    /// Remembers a sent message so that its receipts can name it.
    fn note_sent(&mut self, answer: &Status, to: String, text: &str) {
        if let Some(id) = &answer.id {
            self.sent.insert(id.clone(), (to, snippet(text)));
        }
    }

    /// Shows a receipt: which message it is about, if it was sent here, and what happened.
    fn show_receipt(&mut self, id: &str, delivery: &Delivery) {
        // Only STORED_LATER may still be followed by another receipt (DELIVERED, once the
        // contact reads it); every other receipt is the message's last word.
        let about = if *delivery == Delivery::Stored {
            self.sent.get(id).cloned()
        } else {
            self.sent.remove(id)
        };
        println!("{}", receipt_line(id, about.as_ref(), delivery));
    }

    /// `/to WHO`: makes WHO the current contact and shows its fingerprint.
    async fn switch(&mut self, who: &str) -> Result<(), ClientError> {
        let key = self.client.resolve(who).await?;
        // A bare key needs no lookup, but its alias and presence make the prompt friendlier;
        // a key the server does not know yet is fine (messages to it are stored).
        if self.client.cached_user(&key).is_none() {
            match self.client.get_user(&key.to_hex()).await {
                Ok(_) => {}
                Err(e) if e.server_status() == Some(status::NO_SUCH_USER) => {
                    println!("* {who} is not known to the server yet; messages will wait for it");
                }
                Err(e) => return Err(e),
            }
        }
        self.seen.insert(key);
        println!(
            "* talking to {} ({}), fingerprint {}",
            who,
            self.name_of(&key),
            key.fingerprint()
        );
        self.current = Some((who.to_string(), key));
        Ok(())
    }

    /// `/trust ALIAS`: accepts the key the server names for ALIAS now (asked again first, so
    /// that what is accepted is the server's current word).
    async fn trust(&mut self, alias: &str) -> Result<(), ClientError> {
        let user = self.client.get_user(alias).await?;
        match self.client.accept_contact_key(alias) {
            Some(key) => println!(
                "* {alias} is now pinned to {}; compare it with {alias} if you have not",
                key.fingerprint()
            ),
            None => println!(
                "* {alias} has the pinned key {}; nothing to accept",
                user.key.fingerprint()
            ),
        }
        Ok(())
    }

    /// `/whois WHO`.
    async fn whois(&mut self, who: &str) -> Result<(), ClientError> {
        let user = self.client.get_user(who).await?;
        print_user_details(&user);
        Ok(())
    }

    /// Prints a roster or search result.
    fn print_users(&self, users: &[User]) {
        if users.is_empty() {
            println!("  (nobody)");
        }
        for user in users {
            let presence = match user.online {
                Some(true) => "online ",
                Some(false) => "offline",
                None => "       ",
            };
            let names = if user.aliases.is_empty() {
                "-".to_string()
            } else {
                user.aliases.join(", ")
            };
            println!("  {presence} {} {names}", short_key(&user.key));
        }
    }

    /// Handles one event from the server.
    async fn event(&mut self, event: Result<Event, ClientError>) -> anyhow::Result<()> {
        match event {
            Ok(Event::Message(m)) => self.show_message(m).await?,
            Ok(Event::Undecryptable { from, reason, .. }) => {
                println!("* a message from {from} could not be decrypted: {reason}");
            }
            Ok(Event::Presence { key, online }) => {
                let state = if online { "online" } else { "offline" };
                println!("* {} is {state}", self.name_of(&key));
            }
            Ok(Event::Receipt { id, delivery, .. }) => self.show_receipt(&id, &delivery),
            Ok(Event::SessionExists(_)) => println!(
                "* another session is logged in with this key and receives its messages; \
                 type /ghost to take over"
            ),
            Ok(Event::Closing { status, reason }) => match status {
                status::TAKEN_OVER => {
                    println!("* this session was taken over by a newer login of the same key")
                }
                status::TOO_SLOW => println!(
                    "* the server dropped this session for reading too slowly; \
                     reconnect to get the rest of your messages"
                ),
                _ => println!("* server error: {reason}"),
            },
            Ok(Event::Notice(text)) => println!("* {text}"),
            Ok(Event::Requested { from, .. }) => println!(
                "* {} (fingerprint {}) asks to talk: /accept, /decline or /block {}",
                self.name_of(&from),
                from.fingerprint(),
                from.to_hex()
            ),
            Ok(Event::Conversation(c)) => {
                let others: Vec<String> = c
                    .members
                    .iter()
                    .filter(|k| **k != self.client.identity().public_key())
                    .map(|k| self.name_of(k))
                    .collect();
                if c.pending.is_empty() {
                    println!(
                        "* conversation with {}: everyone accepted",
                        others.join(", ")
                    );
                } else {
                    println!(
                        "* conversation with {}: waiting for them to accept",
                        others.join(", ")
                    );
                }
            }
            Ok(Event::ContactKeyChanged(change)) => {
                let accept = format!("/trust {}", change.alias);
                let text = contact_changed(&change, self.pins.contacts_path(), &accept);
                println!("* warning: {text}");
            }
            Ok(Event::Answer { answer, .. }) => self.show_late_answer(answer),
            Ok(
                event @ (Event::RoomMessage(_)
                | Event::Invited { .. }
                | Event::RoomChanged { .. }
                | Event::RemovedFromRoom { .. }
                | Event::RoomMember { .. }),
            ) => {
                if let Some(line) = crate::room::event_line(&event) {
                    println!("{line}");
                }
                if let Event::RoomMessage(m) = event
                    && let Some(id) = m.id
                {
                    self.client.acknowledge(&id);
                }
            }
            Ok(Event::Closed) => {
                bail!(
                    "connection to {} lost: the server closed the connection",
                    self.client.endpoint()
                )
            }
            // The login's own events do not come after it, and the client turns a broken
            // link into an error (ClientError::Link) before it gets here.
            Ok(
                Event::ServerKey { .. }
                | Event::LoggedIn { .. }
                | Event::LoginFailed(_)
                | Event::LinkBroken(_),
            ) => {}
            Err(e) => self.run(Err(e))?,
        }
        Ok(())
    }

    /// Shows an answer nobody waited for: the outcome of `--alias` at the login, or a
    /// refused acknowledgement; the rest (answers to requests given up) is not worth showing.
    fn show_late_answer(&mut self, answer: Answer) {
        match answer {
            Answer::Register { result: Ok(s), .. } => println!("* {}", describe(&s)),
            Answer::Register {
                alias,
                result: Err(refusal),
            } => println!("* cannot claim {alias}: {refusal}"),
            Answer::Ack {
                result: Err(refusal),
                ..
            } => self.ack_failed(&refusal.to_string()),
            _ => {}
        }
    }

    /// Reports a refused acknowledgement, once: a server that refuses one refuses every one.
    fn ack_failed(&mut self, why: &str) {
        if !self.ack_warned {
            println!(
                "* cannot acknowledge messages ({why}); the server will deliver them again at \
                 the next login"
            );
            self.ack_warned = true;
        }
    }

    /// Prints an incoming message, with the sender's fingerprint the first time.
    async fn show_message(&mut self, m: Received) -> anyhow::Result<()> {
        if self.seen.insert(m.from) {
            // Learn the sender's alias for display; a failed lookup only costs the alias.
            if self.client.cached_user(&m.from).is_none()
                && let Err(e) = self.client.get_user(&m.from.to_hex()).await
                && e.is_connection_lost()
            {
                return Err(lost(&self.client, e));
            }
            println!(
                "* new contact {}: fingerprint {}",
                self.name_of(&m.from),
                m.from.fingerprint()
            );
        }
        // An alias the sender wrote is shown only if it is pinned to the sender's key.
        let name = m.name.clone().unwrap_or_else(|| self.name_of(&m.from));
        let request = if m.request { " (request)" } else { "" };
        println!("[{}] {name}{request}: {}", format_time(m.date), m.text);
        // Shown, so the server may forget it (and tell the sender it was delivered).
        if let Some(id) = m.id {
            match self.client.ack(&[id]).await {
                Ok(_) => {}
                Err(e) if e.is_connection_lost() => return Err(lost(&self.client, e)),
                Err(e) => self.ack_failed(&e.to_string()),
            }
        }
        Ok(())
    }
}
