//! Logging in from the command line, and the words for what goes wrong.

use std::io;
use std::time::Duration;

use anyhow::anyhow;
use flexim_client::protocol::status;
use flexim_client::{Client, ClientError, ConnectOptions, Endpoint, Identity, KeyFileError, Trust};

use crate::ConnArgs;
use crate::pins::{Pins, server_changed};

/// Loads the key and logs in, turning failures into messages that say what to do. The server's
/// key must be the one given with `--server-key` or pinned for the address (a new one is
/// pinned), and the contacts' pins go to the engine before the login.
pub(crate) async fn connect(conn: &ConnArgs) -> anyhow::Result<(Client, Pins)> {
    let identity = load_identity(conn)?;
    let mut pins = Pins::open(conn)?;
    let expected = pins.expected(conn);
    let options = ConnectOptions {
        alias: conn.alias.clone(),
        server_key: expected,
        contact_pins: pins.contacts_for(expected)?,
        rooms: pins.load_rooms()?,
        // 1:1 conversations on MLS: the rooms file keeps the pair groups between runs.
        pairs: true,
    };
    let mut client = Client::connect_with(endpoint(conn)?, &identity, options)
        .await
        .map_err(|e| match e {
            ClientError::ServerKeyMismatch { pinned, got, .. } => {
                server_changed(&pins, conn, &pinned, &got)
            }
            e => login_error(conn, e),
        })?;
    pins.logged_in(&mut client, conn)?;
    Ok((client, pins))
}

/// The server's address, trusting the CA of `--ca` when one is given.
fn endpoint(conn: &ConnArgs) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::parse(&conn.server)?;
    Ok(match &conn.ca {
        Some(path) => endpoint.trusting(Trust::from_ca_file(path)?)?,
        None => endpoint,
    })
}

/// How long `send` keeps trying to log in again after losing its connection: long enough for
/// a server to restart.
const RECONNECT_FOR: Duration = Duration::from_secs(15);

/// Logs in again after a lost connection, with the same client (what it did not see confirmed
/// goes out again at the login). A server that is restarting refuses connections (or says it
/// is shutting down) for a moment, so failures of that kind are retried, with growing pauses,
/// for up to [`RECONNECT_FOR`]; anything else (a wrong server key, say) fails at once.
pub(crate) async fn reconnect(client: &mut Client, conn: &ConnArgs) -> anyhow::Result<()> {
    let give_up = tokio::time::Instant::now() + RECONNECT_FOR;
    let mut pause = Duration::from_millis(100);
    loop {
        match client.reconnect().await {
            Ok(()) => return Ok(()),
            Err(e) if may_pass(&e) && tokio::time::Instant::now() + pause < give_up => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(login_error(conn, e)),
        }
    }
}

/// Whether a login failure may go away by itself: no server listening, a connection cut or
/// timing out, a server shutting down.
fn may_pass(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. }
        | ClientError::Upgrade { .. }
        | ClientError::Timeout { .. }
        | ClientError::ClosedDuringHandshake
        | ClientError::Closed
        | ClientError::Io(_)
        | ClientError::WebSocket(_) => true,
        ClientError::Server { status, .. } => *status == status::SHUTTING_DOWN,
        _ => false,
    }
}

/// Loads the key file named on the command line.
fn load_identity(conn: &ConnArgs) -> anyhow::Result<Identity> {
    Identity::load(&conn.key).map_err(|e| match &e {
        KeyFileError::Read { error, .. } if error.kind() == io::ErrorKind::NotFound => anyhow!(
            "{e}; create one with `flexim keygen --out {}`",
            conn.key.display()
        ),
        _ => anyhow!(e),
    })
}

/// A login failure as a message that says what to do.
fn login_error(conn: &ConnArgs, e: ClientError) -> anyhow::Error {
    match &e {
        ClientError::Connect { error, .. } if error.kind() == io::ErrorKind::ConnectionRefused => {
            anyhow!("{e}; is `just serve` running?")
        }
        ClientError::Tls { .. } if conn.ca.is_none() && e.is_untrusted_certificate() => anyhow!(
            "{e}; if the server's certificate comes from a private CA, give its certificate \
             with --ca FILE"
        ),
        // These already name the server.
        ClientError::Connect { .. }
        | ClientError::Tls { .. }
        | ClientError::Upgrade { .. }
        | ClientError::Timeout { .. }
        | ClientError::NotFlexim { .. }
        | ClientError::ServerKeyMismatch { .. }
        | ClientError::Endpoint(_) => anyhow!(e),
        _ => anyhow!("cannot log in to {}: {e}", conn.server),
    }
}

/// Explains a connection loss in the middle of a command.
pub(crate) fn lost(client: &Client, e: ClientError) -> anyhow::Error {
    anyhow!("connection to {} lost: {e}", client.endpoint())
}
