//! `flexim room ...` and the chat's `/room ...` commands (docs/PROTOCOL.md §16): creating a
//! room, inviting, removing, leaving, accepting an invitation, the member list with the
//! room's safety number, and sending. Both run [`command`], so a script and a chat say the
//! same things.

use std::process::ExitCode;

use flexim_client::protocol::conversation::RoomId;
use flexim_client::protocol::{PublicKey, Status};
use flexim_client::{Client, ClientError, Event, RoomIncoming};
use serde::Serialize;

use crate::RoomArgs;
use crate::connect::{connect, lost};
use crate::format::{describe, format_utc};

/// The chat's and the command line's room usage.
pub(crate) const USAGE: &str = "\
  /room create                 create a room; prints its id
  /room invite ROOM WHO        add WHO (an alias or a key) to ROOM
  /room remove ROOM WHO        remove WHO from ROOM (admins only)
  /room accept ROOM            accept an invitation to ROOM
  /room leave ROOM             leave ROOM, or decline its invitation
  /room members ROOM           the members, their fingerprints and the safety number
  /room say ROOM TEXT          send TEXT to ROOM
  /rooms                       your rooms and invitations
ROOM is a room's id (32 hex digits) or the start of one of your rooms' ids";

/// Runs `flexim room ACTION ...`.
pub(crate) async fn run(args: RoomArgs) -> anyhow::Result<ExitCode> {
    let (mut client, pins) = connect(&args.conn).await?;
    let words: Vec<&str> = args.action.iter().map(String::as_str).collect();
    let result = command(&mut client, &words).await;
    pins.save(&mut client);
    let _ = client.close().await;
    match result {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_connection_lost() => Err(lost(&client, e)),
        Err(e) => {
            eprintln!("flexim: room {}: {e}", words.join(" "));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// One room command (`create`, `invite ROOM WHO`, ...): the lines to print, or the error.
pub(crate) async fn command(
    client: &mut Client,
    words: &[&str],
) -> Result<Vec<String>, ClientError> {
    let usage = || ClientError::BadAnswer(format!("usage:\n{USAGE}"));
    match words {
        ["create"] => {
            let room = client.create_room().await?;
            Ok(vec![room.to_hex()])
        }
        ["list"] | [] => Ok(list(client)),
        ["invite", room, who] => {
            let room = find(client, room)?;
            Ok(vec![describe(&client.invite(room, who).await?)])
        }
        ["remove", room, who] => {
            let room = find(client, room)?;
            Ok(vec![describe(&client.remove_member(room, who).await?)])
        }
        ["accept", room] => {
            let room = find(client, room)?;
            Ok(vec![describe(&client.accept_invitation(room).await?)])
        }
        ["leave", room] => {
            let room = find(client, room)?;
            Ok(vec![describe(&client.leave_room(room).await?)])
        }
        ["members", room] => members(client, find(client, room)?).await,
        ["say", room, text @ ..] if !text.is_empty() => {
            let room = find(client, room)?;
            let answer: Status = client.send_room(room, &text.join(" ")).await?;
            Ok(vec![describe(&answer)])
        }
        _ => Err(usage()),
    }
}

/// The room a command names: its full id, or the start of the id of one of this user's rooms.
fn find(client: &Client, text: &str) -> Result<RoomId, ClientError> {
    if let Some(room) = RoomId::parse(text) {
        return Ok(room);
    }
    let text = text.to_ascii_lowercase();
    let matching: Vec<RoomId> = client
        .rooms()
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r.to_hex().starts_with(&text))
        .collect();
    match matching.as_slice() {
        [one] if !text.is_empty() => Ok(*one),
        [] | [_] => Err(ClientError::Room(format!(
            "no room of yours starts with {text:?}"
        ))),
        _ => Err(ClientError::Room(format!(
            "several of your rooms start with {text:?}"
        ))),
    }
}

/// `/rooms`: one line per room, invitations marked.
fn list(client: &Client) -> Vec<String> {
    let rooms = client.rooms();
    if rooms.is_empty() {
        return vec!["no rooms".into()];
    }
    rooms
        .into_iter()
        .map(|(room, invited)| match invited {
            true => format!("{room} (invitation: /room accept or /room leave)"),
            false => room.to_hex(),
        })
        .collect()
}

/// `/room members ROOM`: the server's list, checked against the MLS group's, and the safety
/// number to compare out of band.
async fn members(client: &mut Client, room: RoomId) -> Result<Vec<String>, ClientError> {
    let list = client.room_members(room).await?;
    let group = client.group_members(room)?;
    let mut lines = Vec::new();
    for member in &list.members {
        let admin = if list.admins.contains(member) {
            " (admin)"
        } else {
            ""
        };
        let key = PublicKey::from_hex(member);
        let fingerprint = key.map(|k| k.fingerprint()).unwrap_or_default();
        let in_group = key.is_some_and(|k| group.iter().any(|(g, _)| *g == k));
        let warning = if in_group {
            ""
        } else {
            "  NOT IN THE ENCRYPTED GROUP"
        };
        lines.push(format!(
            "{member} fingerprint {fingerprint}{admin}{warning}"
        ));
    }
    for (key, _) in &group {
        if !list.members.contains(&key.to_hex()) {
            lines.push(format!(
                "{} fingerprint {}  in the encrypted group, not in the server's list (left; its removal is pending)",
                key.to_hex(),
                key.fingerprint()
            ));
        }
    }
    lines.push(format!("epoch {}", list.epoch));
    lines.push(format!("safety number {}", client.safety_number(room)?));
    Ok(lines)
}

/// A room's event as a line for the user, or `None` for events that are not about rooms.
pub(crate) fn event_line(event: &Event) -> Option<String> {
    let short = |k: &PublicKey| k.fingerprint();
    Some(match event {
        Event::RoomMessage(m) => plain_line(m),
        Event::Invited { room, from } => format!(
            "* {} invited you to room {room}: /room accept {room} or /room leave {room}",
            short(from)
        ),
        Event::RoomChanged {
            room,
            by,
            added,
            removed,
            epoch,
        } => {
            let names = |keys: &[PublicKey]| keys.iter().map(short).collect::<Vec<_>>().join(", ");
            let mut change = Vec::new();
            if !added.is_empty() {
                change.push(format!("added {}", names(added)));
            }
            if !removed.is_empty() {
                change.push(format!("removed {}", names(removed)));
            }
            format!(
                "* room {room}: {} {} (epoch {epoch})",
                short(by),
                change.join(" and ")
            )
        }
        Event::RemovedFromRoom { room, by } => {
            format!(
                "* {} removed you from room {room}; nothing sent there from now on reaches you",
                short(by)
            )
        }
        Event::RoomMember {
            room,
            member,
            joined: false,
            by,
        } if by.as_ref() == Some(member) => {
            format!("* {} left room {room}", short(member))
        }
        Event::RoomMember { .. } => return None,
        _ => return None,
    })
}

/// A room message as a line: `[time] #ROOM FROM: text`.
pub(crate) fn plain_line(m: &RoomIncoming) -> String {
    let invited = if m.invited { " (invitation)" } else { "" };
    format!(
        "[{}] #{} {}{invited}: {}",
        format_utc(m.date),
        &m.room.to_hex()[..8],
        m.from.fingerprint(),
        m.text
    )
}

/// A room message as a JSON line, as `listen --json` prints it.
pub(crate) fn json_line(m: &RoomIncoming) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        room: String,
        from: String,
        date: i64,
        msg: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        invited: bool,
    }
    let line = Line {
        room: m.room.to_hex(),
        from: m.from.to_hex(),
        date: m.date,
        msg: &m.text,
        id: m.id.as_deref(),
        invited: m.invited,
    };
    serde_json::to_string(&line).expect("a JSON line of strings and numbers serializes")
}
