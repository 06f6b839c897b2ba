//! `flexim listen`: incoming messages, one line each, acknowledged once printed.

use std::process::ExitCode;

use anyhow::bail;
use flexim_client::{Answer, Client, ClientError, Event};
use tokio::time::Instant;

use crate::connect::{connect, lost};
use crate::format::{describe, json_line, plain_line, print_line};
use crate::pins::{Pins, contact_changed, trust_command};
use crate::{EXIT_TIMEOUT, ListenArgs};

const SESSION_EXISTS_HINT: &str = "another session is logged in with this key and receives its \
    messages; use --ghost to take over";

pub(crate) async fn run(args: ListenArgs) -> anyhow::Result<ExitCode> {
    let (mut client, pins) = connect(&args.conn).await?;
    if args.ghost {
        match client.ghost().await {
            Ok(answer) => eprintln!("{}", describe(&answer)),
            Err(e) if e.is_connection_lost() => return Err(lost(&client, e)),
            Err(e) => bail!("GHOST failed: {e}"),
        }
    }
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let mut listener = Listener {
        received: 0,
        ack_warned: false,
        pins,
    };
    loop {
        if args.count.is_some_and(|n| listener.received >= n) {
            let _ = client.close().await;
            return Ok(ExitCode::SUCCESS);
        }
        let event = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, client.next_event()).await {
                Ok(event) => event,
                Err(_) => {
                    let _ = client.close().await;
                    return Ok(timed_out(&args, listener.received));
                }
            },
            None => client.next_event().await,
        };
        let handled = listener.event(&mut client, &args, event).await;
        listener.pins.save(&mut client);
        handled?;
    }
}

/// The exit after `--timeout`: success without `--count`, else the timeout code.
fn timed_out(args: &ListenArgs, received: u64) -> ExitCode {
    match args.count {
        None => ExitCode::SUCCESS,
        Some(n) => {
            eprintln!(
                "flexim: timed out: {received} of {n} messages arrived within {:?}",
                args.timeout.unwrap_or_default()
            );
            ExitCode::from(EXIT_TIMEOUT)
        }
    }
}

/// What `listen` keeps between events.
struct Listener {
    /// Messages printed.
    received: u64,
    /// Whether a refused ACK was reported: a server that refuses one refuses every one, and
    /// saying so once is enough.
    ack_warned: bool,
    /// Where the contacts' keys are kept (saved after every event that changed them).
    pins: Pins,
}

impl Listener {
    /// Handles one event.
    async fn event(
        &mut self,
        client: &mut Client,
        args: &ListenArgs,
        event: Result<Event, ClientError>,
    ) -> anyhow::Result<()> {
        match event {
            Ok(Event::Message(message)) => {
                print_line(&if args.json {
                    json_line(&message)
                } else {
                    plain_line(&message)
                })?;
                self.printed(client, message.id).await?;
            }
            Ok(Event::RoomMessage(message)) => {
                print_line(&if args.json {
                    crate::room::json_line(&message)
                } else {
                    crate::room::plain_line(&message)
                })?;
                self.printed(client, message.id).await?;
                self.pins.save_rooms(client);
            }
            Ok(
                event @ (Event::Invited { .. }
                | Event::RoomChanged { .. }
                | Event::RemovedFromRoom { .. }
                | Event::RoomMember { .. }),
            ) => {
                if let Some(line) = crate::room::event_line(&event) {
                    eprintln!("flexim: {}", line.trim_start_matches("* "));
                }
                self.pins.save_rooms(client);
            }
            Ok(Event::Undecryptable { from, reason, .. }) => {
                eprintln!("flexim: a message from {from} could not be decrypted: {reason}");
            }
            Ok(Event::ContactKeyChanged(change)) => {
                let accept = trust_command(&change, &args.conn);
                let text = contact_changed(&change, self.pins.contacts_path(), &accept);
                eprintln!(
                    "flexim: warning: {text}. Messages from the new key are shown with that \
                     key, not as {}.",
                    change.alias
                );
            }
            Ok(Event::SessionExists(_)) => {
                if !args.ghost {
                    eprintln!("flexim: {SESSION_EXISTS_HINT}");
                }
            }
            Ok(Event::Answer { answer, .. }) => match answer {
                Answer::Register {
                    alias,
                    result: Err(refusal),
                } => eprintln!("flexim: server: cannot claim {alias}: {refusal}"),
                Answer::Ack {
                    result: Err(refusal),
                    ..
                } => self.ack_failed(&refusal.to_string()),
                _ => {}
            },
            Ok(Event::Notice(text)) => eprintln!("flexim: server: {text}"),
            Ok(Event::Closing { reason, .. }) => eprintln!("flexim: server: {reason}"),
            Ok(Event::Closed) => match args.count {
                Some(n) => bail!(
                    "the server closed the connection after {} of {n} messages",
                    self.received
                ),
                None => bail!("the server closed the connection"),
            },
            // Receipts concern messages this key sent, perhaps from another program.
            Ok(_) => {}
            Err(e) if e.is_connection_lost() => return Err(lost(client, e)),
            Err(e) => eprintln!("flexim: {e}"),
        }
        Ok(())
    }

    /// Counts a message just printed and acknowledges it: only once printed, so that a message
    /// this run does not show stays on the server for the next one.
    async fn printed(&mut self, client: &mut Client, id: Option<String>) -> anyhow::Result<()> {
        self.received += 1;
        if let Some(id) = id {
            match client.ack(&[id]).await {
                Ok(_) => {}
                Err(e) if e.is_connection_lost() => return Err(lost(client, e)),
                Err(e) => self.ack_failed(&e.to_string()),
            }
        }
        Ok(())
    }

    /// Reports a refused acknowledgement, once.
    fn ack_failed(&mut self, why: &str) {
        if !self.ack_warned {
            eprintln!(
                "flexim: cannot acknowledge messages ({why}); the server will deliver them again"
            );
            self.ack_warned = true;
        }
    }
}
