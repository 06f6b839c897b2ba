//! The tests' user of rooms: a key, its MLS member and its connection, with the few steps the
//! tests repeat (answers read past the room's traffic, a room built and joined).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use flexim_mls::{Member, Received};
use flexim_protocol::conversation::RoomId;
use flexim_protocol::datum::{Acknowledge, Message, RoomMemberList, Status};
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Command, Datum, PublicKey, SecretKey};
use flexim_tests::{Conn, TestServer, new_key, random};

/// A user in the tests: its key, its MLS state, its connection, and what arrived while it
/// waited for an answer.
pub(super) struct Party {
    /// The FLEX key.
    pub(super) key: SecretKey,
    /// The MLS member of that key.
    pub(super) mls: Member,
    /// The logged-in connection.
    pub(super) conn: Conn,
    /// Datums that came while an answer was awaited, in order.
    pub(super) seen: VecDeque<Datum>,
}

/// Whether `s` answers an ACK.
fn is_ack_answer(s: &Status) -> bool {
    s.status == status::OK && s.payload.starts_with("acknowledged ")
}

/// A fresh room id.
pub(super) fn room_id() -> RoomId {
    let mut b = [0u8; 16];
    random(&mut b);
    RoomId::ordinary(b)
}

/// A fresh message id.
fn message_id() -> String {
    let mut b = [0u8; 16];
    random(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Party {
    /// Logs `key` in at `tcp`, with a new MLS member.
    pub(super) async fn login(tcp: SocketAddr, key: SecretKey) -> Party {
        let conn = Conn::login_tcp(tcp, &key).await.expect("login");
        let mls = Member::new(key.public_key().0).expect("an MLS member");
        let mut p = Party {
            key,
            mls,
            conn,
            seen: VecDeque::new(),
        };
        p.sync().await;
        p
    }

    /// Logs in again (same key, same MLS state) at `tcp`.
    pub(super) async fn reconnect(&mut self, tcp: SocketAddr) {
        self.conn = Conn::login_tcp(tcp, &self.key).await.expect("login again");
        self.seen.clear();
        self.sync().await;
    }

    /// Reads past whatever answers the login left (the client engine may have asked the
    /// server something, such as its count of KeyPackages), keeping the room's traffic: a
    /// GETUSER of this key, answered with a User datum, comes after them.
    pub(super) async fn sync(&mut self) {
        let me = self.pk().to_hex();
        let c = Command::new(cmd::GETUSER, &[&me]);
        self.conn.send(&c.into()).await.unwrap();
        loop {
            match self.conn.datum().await.expect("a datum") {
                Datum::User(_) => return,
                Datum::Status(_) => continue,
                other => self.seen.push_back(other),
            }
        }
    }

    pub(super) fn pk(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The next answer (a Status that is no notice, a RoomMemberList or a User); what comes before
    /// it is kept for [`Party::next`]. The answers to the ACKs [`Party::message`] sends are
    /// skipped.
    pub(super) async fn answer(&mut self) -> Datum {
        loop {
            match self.conn.datum().await.expect("a datum") {
                Datum::Status(s) if status::is_notice(s.status) || is_ack_answer(&s) => continue,
                d @ (Datum::Status(_) | Datum::RoomMemberList(_) | Datum::User(_)) => return d,
                other => self.seen.push_back(other),
            }
        }
    }

    /// Sends a command and returns its answer.
    pub(super) async fn command(&mut self, name: &str, args: &[&str]) -> Datum {
        let c = Command::new(name, args);
        self.conn.send(&c.into()).await.unwrap();
        self.answer().await
    }

    /// Sends a command answered with a Status, and returns it.
    pub(super) async fn status(&mut self, name: &str, args: &[&str]) -> Status {
        match self.command(name, args).await {
            Datum::Status(s) => s,
            other => panic!("{name}: expected a Status, got {other:?}"),
        }
    }

    /// The next datum of the room's traffic (messages, requests, members joining and
    /// parting), skipping notices and answers.
    pub(super) async fn next(&mut self) -> Datum {
        if let Some(d) = self.seen.pop_front() {
            return d;
        }
        loop {
            match self.conn.datum().await.expect("a datum") {
                Datum::Status(_) => continue,
                d => return d,
            }
        }
    }

    /// The next room Message, acknowledged; other traffic is skipped.
    pub(super) async fn message(&mut self) -> Message {
        loop {
            if let Datum::Message(m) = self.next().await {
                if let Some(id) = &m.id {
                    let ack = Command::new(cmd::ACK, &[id.as_str()]);
                    self.conn.send(&ack.into()).await.unwrap();
                }
                return m;
            }
        }
    }

    /// The next room Message, opened with MLS.
    pub(super) async fn open(&mut self, room: RoomId) -> (Message, Received) {
        let m = self.message().await;
        let bytes = BASE64.decode(&m.msg).expect("base64");
        let received = self.mls.open(room.0, &bytes).expect("the message opens");
        (m, received)
    }

    /// Publishes `n` new KeyPackages; returns the answer.
    pub(super) async fn publish(&mut self, n: usize) -> Status {
        let packages: Vec<String> = self
            .mls
            .key_packages(n)
            .unwrap()
            .iter()
            .map(|p| BASE64.encode(p))
            .collect();
        let args: Vec<&str> = packages.iter().map(String::as_str).collect();
        self.status(cmd::KEYPACKAGES, &args).await
    }

    /// Sends a room Message carrying `mls` and returns its answer.
    pub(super) async fn send_room(
        &mut self,
        room: RoomId,
        mls: &[u8],
        add: &[PublicKey],
        remove: &[PublicKey],
        welcome: Option<&[u8]>,
    ) -> Status {
        let id = message_id();
        let m = Message {
            to: room.to_hex(),
            from: self.pk().to_hex(),
            date: flexim_tests::unix_now(),
            msg: BASE64.encode(mls),
            id: Some(id.clone()),
            add: add.iter().map(PublicKey::to_hex).collect(),
            remove: remove.iter().map(PublicKey::to_hex).collect(),
            welcome: welcome.map(|w| BASE64.encode(w)),
            ..Default::default()
        };
        self.conn.send(&Datum::Message(m)).await.unwrap();
        match self.answer().await {
            Datum::Status(s) => {
                assert_eq!(s.id.as_deref(), Some(id.as_str()), "the answer names it");
                s
            }
            other => panic!("expected a Status, got {other:?}"),
        }
    }

    /// Seals `text` for the room and sends it.
    pub(super) async fn say(&mut self, room: RoomId, text: &str) -> Status {
        let sealed = self.mls.seal(room.0, text.as_bytes()).unwrap();
        self.send_room(room, &sealed, &[], &[], None).await
    }

    /// Claims a KeyPackage of `who`.
    pub(super) async fn claim(&mut self, who: &PublicKey) -> Status {
        self.status(cmd::KEYPACKAGE, &[&who.to_hex()]).await
    }

    /// Accepts the invitation into `room` that arrives: joins the group from its Welcome and
    /// sends Acknowledge with the room's id.
    pub(super) async fn accept_invitation(&mut self, room: RoomId, by: &PublicKey) {
        // A stranger's first claim of a KeyPackage opened a 1:1 request before: skipped.
        let invitation = loop {
            if let Datum::Request(r) = self.next().await
                && r.options.iter().any(|o| o == "room")
            {
                break r;
            }
        };
        assert_eq!(invitation.id.as_deref(), Some(room.to_hex().as_str()));
        assert_eq!(invitation.options, vec!["room".to_string()]);
        assert_eq!(invitation.from, by.to_hex());
        let welcome = BASE64
            .decode(invitation.welcome.expect("a Welcome"))
            .unwrap();
        assert_eq!(self.mls.join(&welcome).unwrap(), room.0);
        let ack = Datum::Acknowledge(Acknowledge { id: room.to_hex() });
        self.conn.send(&ack).await.unwrap();
        match self.answer().await {
            Datum::Status(s) => assert_eq!(s.status, status::OK, "{s:?}"),
            other => panic!("expected a Status, got {other:?}"),
        }
    }

    /// MEMBERS of `room`.
    pub(super) async fn members(&mut self, room: RoomId) -> Result<RoomMemberList, Status> {
        match self.command(cmd::MEMBERS, &[&room.to_hex()]).await {
            Datum::RoomMemberList(l) => Ok(l),
            Datum::Status(s) => Err(s),
            other => panic!("expected a RoomMemberList, got {other:?}"),
        }
    }
}

/// `admin` adds `others` (who published KeyPackages) in one commit; they join and accept.
/// Members already in the room are not read here: the caller opens the commit for them.
pub(super) async fn add(admin: &mut Party, room: RoomId, others: &mut [&mut Party]) -> Status {
    let mut packages = Vec::new();
    for o in others.iter() {
        let s = admin.claim(&o.pk()).await;
        assert_eq!(s.status, status::KEY_PACKAGE, "{s:?}");
        packages.push((o.pk().0, BASE64.decode(&s.payload).unwrap()));
    }
    let commit = admin.mls.add(room.0, &packages).unwrap();
    let keys: Vec<PublicKey> = others.iter().map(|o| o.pk()).collect();
    let answer = admin
        .send_room(room, &commit.message, &keys, &[], commit.welcome.as_deref())
        .await;
    assert!(
        answer.status == status::RELAYED || answer.status == status::STORED,
        "{answer:?}"
    );
    admin.mls.confirm(room.0).unwrap();
    for o in others.iter_mut() {
        o.accept_invitation(room, &admin.pk()).await;
    }
    answer
}

/// A room of `n` introduced users on `server`, each with KeyPackages: the first created it
/// and added the others in one commit (epoch 1).
pub(super) async fn room_of(server: &TestServer, n: usize) -> (RoomId, Vec<Party>) {
    let keys: Vec<SecretKey> = (0..n).map(|_| new_key()).collect();
    server.introduce(&keys.iter().collect::<Vec<_>>()).await;
    let mut parties = Vec::new();
    for k in keys {
        let mut p = Party::login(server.tcp, k).await;
        assert_eq!(p.publish(2).await.status, status::KEY_PACKAGES);
        parties.push(p);
    }
    let room = room_id();
    let (admin, rest) = parties.split_first_mut().unwrap();
    assert_eq!(
        admin
            .status(cmd::CREATEROOM, &[&room.to_hex()])
            .await
            .status,
        status::OK
    );
    admin.mls.create(room.0).unwrap();
    let mut rest: Vec<&mut Party> = rest.iter_mut().collect();
    add(admin, room, &mut rest).await;
    (room, parties)
}

/// Nothing of the room comes to `p` for a while.
pub(super) async fn hears_nothing(p: &mut Party) {
    let quiet = tokio::time::timeout(Duration::from_millis(700), async {
        loop {
            match p.conn.datum().await {
                Ok(Datum::Status(_)) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "expected nothing, got {quiet:?}");
}
