//! `flexim send`: one message, and the wait until it is safe.

use std::io::{self, Read as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use flexim_client::protocol::Status;
use flexim_client::protocol::status;
use flexim_client::{Answer, Client, ClientError, Event};
use tokio::time::Instant;

use crate::SendArgs;
use crate::connect::{connect, reconnect};
use crate::format::{describe, describe_with_code};
use crate::pins::{contact_changed, trust_command};

/// How far a sent message got.
enum Outcome {
    /// The server confirmed it: stored durably (STORED or STORED_LATER) or acknowledged by the
    /// recipient (DELIVERED). The Status says which.
    Confirmed(Status),
    /// The server handed it to the online recipient, whose client has not acknowledged it
    /// within the time allowed. The server keeps it until the recipient's client does.
    Relayed,
}

/// The text to send: the argument, or stdin for `-` (without the newline `echo` adds).
fn message_text(args: &SendArgs) -> anyhow::Result<String> {
    if args.text != "-" {
        return Ok(args.text.clone());
    }
    let mut text = String::new();
    io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the message from stdin")?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

pub(crate) async fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let text = message_text(&args)?;
    let (mut client, pins) = connect(&args.conn).await?;
    let outcome = deliver(&mut client, &args, &text).await;
    // What the engine learnt about contacts' keys is kept, whether or not the message went.
    pins.save(&mut client);
    let outcome = outcome.map_err(|e| match e {
        Refused::Client(ClientError::ContactKeyChanged(change)) => anyhow!(
            "refusing to send to {}: {}; nothing was sent",
            args.to,
            contact_changed(
                &change,
                pins.contacts_path(),
                &trust_command(&change, &args.conn)
            )
        ),
        Refused::Client(e) => send_error(&client, &args.to, e),
        Refused::Other(e) => e,
    })?;
    report_login_refusals(&mut client).await;
    match outcome {
        Outcome::Confirmed(s) if s.status == status::DELIVERED => eprintln!("delivered"),
        Outcome::Confirmed(s) if s.status == status::STORED_LATER => eprintln!(
            "stored (the recipient's connection ended before it acknowledged the message; \
             it is delivered at the next login)"
        ),
        Outcome::Confirmed(s) => eprintln!("{}", describe(&s)),
        Outcome::Relayed => eprintln!("relayed (the recipient has not acknowledged yet)"),
    }
    let _ = client.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Why `send` failed: the client's error (worded by the caller, who knows the pin files), or
/// a failure already worded.
enum Refused {
    /// The client's error.
    Client(ClientError),
    /// A message ready to show.
    Other(anyhow::Error),
}

/// Sends the message and waits until it is safe, logging in again once if the connection is
/// lost first.
async fn deliver(client: &mut Client, args: &SendArgs, text: &str) -> Result<Outcome, Refused> {
    // The wait for a receipt starts with the first RELAYED and is not extended by a
    // reconnection, so that --wait bounds the whole wait.
    let mut deadline = None;
    let first = match client.send_text(&args.to, text, &args.flags).await {
        Ok(answer) => settle(client, answer, args.wait, &mut deadline).await,
        Err(e) => Err(e),
    };
    match first {
        Ok(outcome) => Ok(outcome),
        Err(e) if e.is_connection_lost() => {
            // A message that was relayed but not confirmed lives only in the server's memory,
            // so it is sent again, with the same id: the recipient drops a second copy.
            eprintln!(
                "flexim: connection to {} lost before the message was confirmed ({e}); \
                 logging in again to send it again",
                client.endpoint()
            );
            let waiting = client.outbox().ids().next().map(str::to_string);
            reconnect(client, &args.conn).await.map_err(|e| {
                Refused::Other(
                    e.context("the message was not confirmed, and logging in again failed"),
                )
            })?;
            let again = match waiting {
                // Sent again at the login, before anything else: its answer, or a receipt
                // that came with the login, says how far it got.
                Some(id) => wait_for(client, &id, None, args.wait, &mut deadline).await,
                // The message never left: the connection failed while looking up the
                // recipient.
                None => match client.send_text(&args.to, text, &args.flags).await {
                    Ok(answer) => settle(client, answer, args.wait, &mut deadline).await,
                    Err(e) => Err(e),
                },
            };
            again.map_err(Refused::Client)
        }
        Err(e) => Err(Refused::Client(e)),
    }
}

/// Reports what went wrong during the login that did not stop it (a refused `--alias`);
/// it would otherwise go unseen.
async fn report_login_refusals(client: &mut Client) {
    while client.has_queued_events() {
        if let Ok(Event::Answer {
            answer:
                Answer::Register {
                    alias,
                    result: Err(refusal),
                },
            ..
        }) = client.next_event().await
        {
            eprintln!("flexim: server: cannot claim {alias}: {refusal}");
        }
    }
}

/// Turns the server's answer to a message into an outcome: STORED is final, and RELAYED means
/// waiting (until `deadline`, set now if this is the first RELAYED) for the receipt that says
/// the recipient acknowledged it.
async fn settle(
    client: &mut Client,
    answer: Status,
    wait: Duration,
    deadline: &mut Option<Instant>,
) -> Result<Outcome, ClientError> {
    if answer.status != status::RELAYED {
        return Ok(Outcome::Confirmed(answer));
    }
    match answer.id.clone() {
        Some(id) => wait_for(client, &id, Some(answer), wait, deadline).await,
        // A server that predates message ids sends no receipts; waiting would be in vain.
        None => Ok(Outcome::Relayed),
    }
}

/// Waits for the message `id` to be confirmed: by a receipt (DELIVERED or STORED_LATER) or,
/// after a reconnection, by the answer to the copy sent at the login. `relayed` is its answer
/// if it was RELAYED already. Gives up at the deadline (set at the first RELAYED) with
/// [`Outcome::Relayed`]; the connection closing first is [`ClientError::Closed`], so that the
/// caller reconnects.
async fn wait_for(
    client: &mut Client,
    id: &str,
    mut relayed: Option<Status>,
    wait: Duration,
    deadline: &mut Option<Instant>,
) -> Result<Outcome, ClientError> {
    loop {
        let next = client.next_event();
        let event = match (relayed.is_some(), *deadline) {
            (true, _) => {
                let until = *deadline.get_or_insert_with(|| Instant::now() + wait);
                match tokio::time::timeout_at(until, next).await {
                    Ok(event) => event?,
                    Err(_) => return Ok(Outcome::Relayed),
                }
            }
            (false, _) => next.await?,
        };
        match event {
            // NOT_KEPT: relayed, then not kept when the recipient went away without reading
            // it. Final, and a failure: the message did not get through.
            Event::Receipt {
                id: about, status, ..
            } if about == id && status::is_error(status.status) => {
                return Err(ClientError::Server {
                    status: status.status,
                    payload: status.payload,
                });
            }
            Event::Receipt {
                id: about, status, ..
            } if about == id => {
                return Ok(Outcome::Confirmed(status));
            }
            Event::Answer {
                answer: Answer::Sent {
                    id: about, result, ..
                },
                ..
            } if about == id => match result {
                Ok(s) if s.status == status::RELAYED => relayed = Some(s),
                Ok(s) => return Ok(Outcome::Confirmed(s)),
                Err(refusal) if refusal.status != 0 => {
                    return Err(ClientError::Server {
                        status: refusal.status,
                        payload: refusal.reason,
                    });
                }
                Err(refusal) => return Err(ClientError::BadAnswer(refusal.reason)),
            },
            // The server sends receipts to the key's active session only, which is another
            // one; this one would wait in vain.
            Event::SessionExists(_) => {
                eprintln!(
                    "flexim: another session of this key is logged in and gets the receipts; \
                     not waiting for one"
                );
                return Ok(Outcome::Relayed);
            }
            // TAKEN_OVER, SHUTTING_DOWN and the like explain the close that follows.
            Event::Closing { status, reason } if status::is_error(status) => {
                let s = Status::new(status, reason);
                eprintln!("flexim: server: {}", describe_with_code(&s));
            }
            Event::Closed => return Err(ClientError::Closed),
            // Messages for this user are not acknowledged here, so the server keeps them for
            // a client that shows them.
            _ => {}
        }
    }
}

/// The error `send` exits with.
fn send_error(client: &Client, to: &str, e: ClientError) -> anyhow::Error {
    match e {
        e if e.is_connection_lost() => anyhow!(
            "connection to {} lost before the server confirmed the message: {e}",
            client.endpoint()
        ),
        e @ ClientError::Server { .. } => anyhow!("the server refused the message: {e}"),
        e => anyhow!("cannot send to {to}: {e}"),
    }
}
