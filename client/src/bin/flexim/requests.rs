//! `flexim requests` and the chat's consent commands (docs/PROTOCOL.md §14): the requests box,
//! and asking, accepting, declining, blocking and being found.

use std::process::ExitCode;

use flexim_client::{Client, ClientError};
use flexim_protocol::{PublicKey, User};

use crate::RequestsArgs;
use crate::connect::{connect, lost};
use crate::format::describe;

/// Runs `flexim requests`: at most one action, then the box as it stands.
pub(crate) async fn run(args: RequestsArgs) -> anyhow::Result<ExitCode> {
    let (mut client, pins) = connect(&args.conn).await?;
    let action = [
        ("ask", &args.ask),
        ("accept", &args.accept),
        ("decline", &args.decline),
        ("block", &args.block),
        ("unblock", &args.unblock),
    ]
    .into_iter()
    .find_map(|(name, who)| who.as_deref().map(|w| (name, w.to_string())));
    let mut failed = false;
    if let Some((name, who)) = action {
        match consent(&mut client, name, &who).await {
            Some(Ok(line)) => println!("{line}"),
            Some(Err(e)) if e.is_connection_lost() => return Err(lost(&client, e)),
            Some(Err(e)) => {
                eprintln!("flexim: {name} {who}: {e}");
                failed = true;
            }
            None => {}
        }
    }
    if let Some(on) = args.discoverable {
        match client.set_discoverable(on.0).await {
            Ok(s) => println!("{}", describe(&s)),
            Err(e) => {
                eprintln!("flexim: discoverable: {e}");
                failed = true;
            }
        }
    }
    match client.requests().await {
        Ok(users) if users.is_empty() => println!("no requests are waiting"),
        Ok(users) => {
            for u in &users {
                println!("{}", request_line(u));
            }
        }
        Err(e) => {
            eprintln!("flexim: REQUESTS: {e}");
            failed = true;
        }
    }
    pins.save(&mut client);
    let _ = client.close().await;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One waiting stranger: its name, key and fingerprint.
pub(crate) fn request_line(u: &User) -> String {
    let name = u.aliases.first().map_or("(no alias)", String::as_str);
    format!(
        "{name} {} fingerprint {}",
        u.key.to_hex(),
        u.key.fingerprint()
    )
}

/// `on` or `off`, for `--discoverable`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OnOff(pub(crate) bool);

impl std::str::FromStr for OnOff {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on" => Ok(OnOff(true)),
            "off" => Ok(OnOff(false)),
            _ => Err("expected on or off".into()),
        }
    }
}

/// A consent action by name (`ask`, `accept`, `decline`, `block`, `unblock`) on `who`, with the
/// line to show when it succeeded; `None` if `name` is not one. An alias is looked up first
/// for `accept`, which takes a key or a conversation id.
pub(crate) async fn consent(
    client: &mut Client,
    name: &str,
    who: &str,
) -> Option<Result<String, ClientError>> {
    let result = match name {
        "ask" => client.ask_to_talk(who).await,
        "accept" => match accept_target(client, who).await {
            Ok(target) => client.accept_request(&target).await,
            Err(e) => Err(e),
        },
        "decline" => client.decline(who).await,
        "block" => client.block(who).await,
        "unblock" => client.unblock(who).await,
        _ => return None,
    };
    Some(result.map(|s| format!("* {}", describe(&s))))
}

/// What an Acknowledge names for `who`: a key or a conversation id as given, an alias as its
/// key.
async fn accept_target(client: &mut Client, who: &str) -> Result<String, ClientError> {
    let is_id = who.len() == 32 && who.bytes().all(|b| b.is_ascii_hexdigit());
    if PublicKey::from_hex(who).is_some() || is_id {
        return Ok(who.to_string());
    }
    Ok(client.resolve(who).await?.to_hex())
}

/// The chat's `/requests`: the waiting strangers, or that there are none.
pub(crate) async fn show_requests(client: &mut Client) -> Result<(), ClientError> {
    let users = client.requests().await?;
    if users.is_empty() {
        println!("* no requests are waiting");
    }
    for u in &users {
        println!("* request from {}", request_line(u));
    }
    Ok(())
}
