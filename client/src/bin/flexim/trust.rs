//! `flexim trust`: the user's explicit acceptance of a contact's new key.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use flexim_client::protocol::PublicKey;
use flexim_client::protocol::keys::validate_alias;
use flexim_client::protocol::status;

use crate::TrustArgs;
use crate::connect::connect;

pub(crate) async fn run(args: TrustArgs) -> anyhow::Result<ExitCode> {
    let alias = args.contact.as_str();
    validate_alias(alias).with_context(|| format!("{alias:?} is not an alias"))?;
    let (mut client, pins) = connect(&args.conn).await?;
    let before = client.contact_pins().get(alias).copied();
    // The server's current word about the alias, which the engine compares with the pin.
    match client.get_user(alias).await {
        Ok(_) => {}
        Err(e) if e.server_status() == Some(status::NO_SUCH_USER) => {
            bail!("nobody is registered as {alias} on this server; there is no key to trust")
        }
        Err(e) => bail!("cannot look up {alias}: {e}"),
    }
    let file = pins.contacts_path().display().to_string();
    let presented = match client.engine().key_change(alias).cloned() {
        Some(change) => {
            refuse_other(alias, &change.presented, args.new_key.as_ref())?;
            client.accept_contact_key(alias);
            eprintln!(
                "flexim: {} is now pinned to {} in {file} (it was {})",
                change.alias,
                change.presented.fingerprint(),
                change.pinned.fingerprint()
            );
            change.presented
        }
        None => {
            let key = client.engine().contact(alias)?;
            refuse_other(alias, &key, args.new_key.as_ref())?;
            match before {
                Some(_) => eprintln!(
                    "flexim: {alias} is pinned to {} in {file} already; nothing to accept",
                    key.fingerprint()
                ),
                None => eprintln!("flexim: pinned {alias} to {} in {file}", key.fingerprint()),
            }
            key
        }
    };
    pins.save(&mut client);
    println!("{}", presented.to_hex());
    let _ = client.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Refuses when the user named the key to accept (`--new-key`) and the server names another:
/// the key may have changed again since the user compared fingerprints.
fn refuse_other(alias: &str, key: &PublicKey, wanted: Option<&PublicKey>) -> anyhow::Result<()> {
    match wanted {
        Some(wanted) if wanted != key => bail!(
            "the server says {alias} is the key {}, not the one you gave ({}); nothing was \
             changed",
            key.fingerprint(),
            wanted.fingerprint()
        ),
        _ => Ok(()),
    }
}
