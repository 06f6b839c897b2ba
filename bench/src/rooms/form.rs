//! Forming a room through the server the way clients do (docs/PROTOCOL.md §16.2-16.5): the
//! members-to-be log in, publish a KeyPackage and accept the admin (§14) in advance; the admin
//! creates the room, claims their KeyPackages, and adds them with real commits carrying `add`
//! and `welcome`, merging each only once the server accepted it.
//!
//! A commit and its Welcome must fit one datum, and the Welcome carries the whole ratchet tree,
//! so it grows with the room. The admin adds as many members per commit as fit (halving the
//! batch when a commit does not), and when even one more member does not fit, the room is as
//! large as the protocol lets it be: the formation stops there and says why.

use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flexim_client::protocol::status::{self, cmd};
use flexim_client::protocol::{Command, Datum, Message, PublicKey, SecretKey, Status};
use flexim_mls::{Commit, Identity, Member, Room};
use flexim_testkit::Conn;
use serde::Serialize;

/// Members added per commit at first; halved whenever a commit does not fit.
const FIRST_BATCH: usize = 64;

/// Logins (each a handshake, a KEYPACKAGES and an Acknowledge) run this many at once.
const LOGINS_AT_ONCE: usize = 32;

/// A member-to-be: logged in, its KeyPackage published, the admin accepted.
pub struct Invitee {
    /// Its key.
    pub key: PublicKey,
    /// Its connection, with nothing unread that matters.
    pub conn: Conn,
}

/// The room's admin: its connection and its MLS state.
pub struct Admin {
    /// Its key.
    pub key: SecretKey,
    /// Its connection.
    pub conn: Conn,
    /// Its MLS member, whose identity is its key.
    pub member: Member,
    /// The room.
    pub room: Room,
}

/// How the formation went.
#[derive(Debug, Clone, Serialize)]
pub struct Formed {
    /// Members the room was to have.
    pub wanted: usize,
    /// Members it has (the admin included).
    pub members: usize,
    /// Commits the server accepted.
    pub commits: usize,
    /// The largest datum body of an accepted commit, in bytes.
    pub largest_datum: usize,
    /// The datum body of the commit that did not fit (adding one member), if one did not.
    pub refused_datum: Option<usize>,
    /// Why the room stopped growing before `wanted`.
    pub stop: Option<String>,
    /// Seconds the formation took (the admin's commits, not the logins).
    pub seconds: f64,
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 32-digit id for a commit: it starts with `c`, which no measured message's id does, so that
/// a receipt for a commit is never counted as one for a message.
fn commit_id() -> String {
    let mut b = [0u8; 16];
    flexim_testkit::random(&mut b);
    format!("c{}", &hex(&b)[1..])
}

/// The next Status that is an answer: receipts (for the commits' copies) and presence
/// notices come in between and are skipped.
async fn answer(conn: &mut Conn) -> anyhow::Result<Status> {
    loop {
        if let Datum::Status(s) = conn.recv().await?
            && !status::is_notice(s.status)
        {
            return Ok(s);
        }
    }
}

/// Sends `command` and returns its answer.
async fn ask(conn: &mut Conn, command: Command) -> anyhow::Result<Status> {
    conn.send(&command.into()).await?;
    answer(conn).await
}

/// One member-to-be (see [`Invitee`]).
async fn invitee(addr: std::net::SocketAddr, admin: PublicKey) -> anyhow::Result<Invitee> {
    let secret = flexim_testkit::new_key();
    let key = secret.public_key();
    let mut conn = Conn::open_tcp(addr, None, flexim_testkit::SMALL_READS).await?;
    conn.login(&secret).await?;
    // A real member's KeyPackage, its identity the user's key; the private half is dropped
    // with the member, since this receiver only measures delivery and never joins.
    let package = Member::new(key.0)?.key_packages(1)?.remove(0);
    let published = ask(
        &mut conn,
        Command::new(cmd::KEYPACKAGES, &[&STANDARD.encode(package)]),
    )
    .await?;
    ensure!(
        published.status == status::KEY_PACKAGES,
        "KEYPACKAGES answered {} {}",
        published.status,
        published.payload
    );
    let accepted = conn.befriend(&admin).await?;
    ensure!(
        accepted.status == status::OK,
        "accepting the admin answered {}",
        accepted.status
    );
    Ok(Invitee { key, conn })
}

/// Logs `n` members-to-be in at `addr`, a few at a time, showing progress.
pub async fn invitees(
    addr: std::net::SocketAddr,
    admin: PublicKey,
    n: usize,
) -> anyhow::Result<Vec<Invitee>> {
    let mut all = Vec::with_capacity(n);
    while all.len() < n {
        let chunk = LOGINS_AT_ONCE.min(n - all.len());
        let tasks: Vec<_> = (0..chunk)
            .map(|_| tokio::spawn(invitee(addr, admin)))
            .collect();
        for task in tasks {
            all.push(task.await.context("a login task panicked")??);
        }
        if n >= 100 && (all.len() % (n / 4).max(1) < chunk || all.len() == n) {
            eprintln!("rooms: {} of {n} members logged in", all.len());
        }
    }
    Ok(all)
}

impl Admin {
    /// Logs the admin in at `addr`, with a new room id.
    pub async fn login(addr: std::net::SocketAddr) -> anyhow::Result<Admin> {
        let key = flexim_testkit::new_key();
        let mut conn = Conn::open_tcp(addr, None, flexim_testkit::LARGE_READS).await?;
        conn.login(&key).await?;
        let member = Member::new(key.public_key().0)?;
        let mut room = [0u8; 16];
        flexim_testkit::random(&mut room);
        // The pair bit clear: an ordinary room's id (docs/PROTOCOL.md §16.9).
        room[0] &= 0x7f;
        Ok(Admin {
            key,
            conn,
            member,
            room,
        })
    }

    /// The admin's key in hex.
    pub fn hex(&self) -> String {
        self.key.public_key().to_hex()
    }

    /// The Message carrying `commit`, as the client engine builds it (§16.4).
    fn commit_message(&self, commit: &Commit) -> Message {
        let keys = |ids: &[Identity]| ids.iter().map(|k| hex(k)).collect();
        Message {
            to: hex(&self.room),
            from: self.hex(),
            date: flexim_testkit::unix_now(),
            msg: STANDARD.encode(&commit.message),
            id: Some(commit_id()),
            add: keys(&commit.added),
            remove: keys(&commit.removed),
            welcome: commit.welcome.as_ref().map(|w| STANDARD.encode(w)),
            ..Default::default()
        }
    }

    /// Claims the KeyPackage of `who` (KEYPACKAGE) and checks whose it is.
    async fn claim(&mut self, who: &PublicKey) -> anyhow::Result<(Identity, Vec<u8>)> {
        let answer = ask(
            &mut self.conn,
            Command::new(cmd::KEYPACKAGE, &[&who.to_hex()]),
        )
        .await?;
        ensure!(
            answer.status == status::KEY_PACKAGE,
            "KEYPACKAGE answered {} {}",
            answer.status,
            answer.payload
        );
        let package = STANDARD
            .decode(answer.payload.as_bytes())
            .map_err(|e| anyhow::anyhow!("a KeyPackage that is not base64: {e}"))?;
        // `Member::add` checks that the package names `who`: the server is not trusted.
        Ok((who.0, package))
    }

    /// Creates the room and adds `invitees` in order, as many per commit as fit in
    /// `max_body`; returns how far it got.
    pub async fn form(
        &mut self,
        invitees: &[PublicKey],
        max_body: usize,
    ) -> anyhow::Result<Formed> {
        let started = Instant::now();
        let created = ask(
            &mut self.conn,
            Command::new(cmd::CREATEROOM, &[&hex(&self.room)]),
        )
        .await?;
        ensure!(
            created.status == status::OK,
            "CREATEROOM answered {} {}",
            created.status,
            created.payload
        );
        self.member.create(self.room)?;
        let mut formed = Formed {
            wanted: invitees.len() + 1,
            members: 1,
            commits: 0,
            largest_datum: 0,
            refused_datum: None,
            stop: None,
            seconds: 0.0,
        };
        // Claimed and not added yet: a package of a commit that did not fit is still unused.
        let mut claimed = Vec::new();
        let (mut next, mut batch) = (0, FIRST_BATCH);
        while formed.members - 1 < invitees.len() {
            let k = batch.min(invitees.len() - (formed.members - 1));
            while claimed.len() < k {
                claimed.push(self.claim(&invitees[next]).await?);
                next += 1;
            }
            match self.commit(&claimed[..k], max_body).await? {
                Ok(body) => {
                    claimed.drain(..k);
                    formed.members += k;
                    formed.commits += 1;
                    formed.largest_datum = formed.largest_datum.max(body);
                    progress(&formed);
                }
                Err((body, _)) if body > max_body && k > 1 => batch = k / 2,
                Err((body, why)) => {
                    formed.refused_datum = Some(body);
                    formed.stop = Some(why);
                    break;
                }
            }
        }
        formed.seconds = started.elapsed().as_secs_f64();
        Ok(formed)
    }

    /// Commits the addition of `packages` and sends it unless its datum is over `max_body`:
    /// the datum's body length once the server accepted it (and the group merged it), or that
    /// length and why it did not go (the group dropped it).
    async fn commit(
        &mut self,
        packages: &[(Identity, Vec<u8>)],
        max_body: usize,
    ) -> anyhow::Result<Result<usize, (usize, String)>> {
        let members = self.member.members(self.room)?.len();
        let commit = self.member.add(self.room, packages)?;
        let datum = Datum::Message(self.commit_message(&commit));
        let body = datum.encode_body().len();
        if body > max_body {
            self.member.abandon(self.room)?;
            let why = format!(
                "at {members} members, a commit adding {} needs a datum of {body} B, over the limit of {max_body} B",
                packages.len()
            );
            return Ok(Err((body, why)));
        }
        self.conn.send(&datum).await?;
        let answer = answer(&mut self.conn).await?;
        if answer.status == status::RELAYED || answer.status == status::STORED {
            self.member.confirm(self.room)?;
            return Ok(Ok(body));
        }
        self.member.abandon(self.room)?;
        let why = format!(
            "at {members} members, the server refused a commit adding {} ({body} B): {} {}",
            packages.len(),
            answer.status,
            answer.payload
        );
        Ok(Err((body, why)))
    }

    /// Asks the server for the room's members (MEMBERS) and returns how many it has.
    pub async fn server_members(&mut self) -> anyhow::Result<usize> {
        let command: Datum = Command::new(cmd::MEMBERS, &[&hex(&self.room)]).into();
        self.conn.send(&command).await?;
        loop {
            match self.conn.recv().await? {
                Datum::RoomMemberList(list) => return Ok(list.members.len()),
                Datum::Status(s) if s.status < 0 && s.status != status::PRESENCE_OFFLINE => {
                    bail!("MEMBERS answered {} {}", s.status, s.payload)
                }
                _ => {}
            }
        }
    }
}

/// Shows the formation's progress on stderr every few commits.
fn progress(formed: &Formed) {
    if formed.commits % 8 == 1 || formed.members == formed.wanted {
        eprintln!(
            "rooms: room of {}: {} members after {} commits (largest datum {} B)",
            formed.wanted, formed.members, formed.commits, formed.largest_datum
        );
    }
}
