//! The operator's actions on users (issue 14), through `flexim-server admin` against a real
//! server: a blocked key's sessions end and it cannot log in while everyone else chats on and
//! what is sent to it is kept; an alias taken from one user and given to another, with the
//! `from` rule following it at once; a drain that takes no new sessions while those open go
//! on.

use flexim_protocol::datum::Command;
use flexim_protocol::{Datum, SecretKey, status};
use flexim_tests::{
    Conn, RedisServer, TestServer, http_request, message, message_with_id, new_key,
};

use super::admin::{admin, admin_json};

/// The operator's side of one server: its data directory and admin address.
struct Operator {
    /// `--data`, for the token.
    data: String,
    /// `--admin`.
    addr: String,
}

impl Operator {
    fn of(server: &TestServer) -> Operator {
        Operator {
            data: server.data_dir().to_string_lossy().into_owned(),
            addr: server.admin_addr().expect("an admin listener"),
        }
    }

    /// `flexim-server admin ARGS`, which must succeed; its output.
    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = admin(&self.data, &self.addr, args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out
    }

    /// `flexim-server admin ARGS`, which must fail; its error.
    fn fails(&self, args: &[&str]) -> String {
        let (code, _, err) = admin(&self.data, &self.addr, args);
        assert_eq!(code, Some(1), "{args:?} succeeded");
        err
    }

    /// `flexim-server admin ARGS` as JSON.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        admin_json(&self.data, &self.addr, args)
    }
}

/// A server, its operator, and three users who know each other.
async fn three_users() -> (TestServer, Operator, [SecretKey; 3]) {
    let server = TestServer::start();
    let op = Operator::of(&server);
    let keys = [new_key(), new_key(), new_key()];
    server.introduce(&[&keys[0], &keys[1], &keys[2]]).await;
    (server, op, keys)
}

/// That the server logged each of `lines`: every action is.
fn logged(server: &TestServer, lines: &[&str]) {
    let logs = server.logs();
    for line in lines {
        assert!(logs.contains(line), "{line:?} not in {logs}");
    }
}

/// REGISTER `alias` on `c`; the answer's code.
async fn register(c: &mut Conn, alias: &str) -> i8 {
    let cmd = Command {
        cmd: "REGISTER".into(),
        payload: vec![alias.into()],
    };
    c.send(&Datum::Command(cmd)).await.unwrap();
    c.answer().await.unwrap().status
}

/// Sends a message from `from` (as `from_field`) to `to` on `c`; the answer's code.
async fn send_as(c: &mut Conn, from_field: &str, to: &SecretKey, id: &str) -> i8 {
    let mut m = message_with_id(&to.public_key(), &to.public_key().to_hex(), "hi", id);
    if let Datum::Message(m) = &mut m {
        m.from = from_field.to_string();
    }
    c.send(&m).await.unwrap();
    c.answer().await.unwrap().status
}

/// The Status a session is ended with (after the notice a second session of a key gets at
/// login, if any), and that the connection then closes.
async fn ended_with(c: &mut Conn) -> flexim_protocol::datum::Status {
    let mut s = c.status().await.unwrap();
    if s.status == status::SESSION_EXISTS {
        s = c.status().await.unwrap();
    }
    assert!(c.closed().await, "the connection closes after {s:?}");
    s
}

#[tokio::test]
async fn a_blocked_key_is_shut_out_while_others_chat_on_and_its_mail_is_kept() {
    let (server, op, [mallory, bob, carol]) = three_users().await;
    let mut m = Conn::login_tcp(server.tcp, &mallory).await.unwrap();
    let mut m2 = Conn::login_ws(&server.ws, &mallory).await.unwrap();
    let mut b = Conn::login_ws(&server.ws, &bob).await.unwrap();
    let mut c = Conn::login_tcp(server.tcp, &carol).await.unwrap();
    assert_eq!(register(&mut m, "mallory").await, status::OK);

    // Blocked by alias: both of its sessions end with -31, over either transport.
    let out = op.ok(&["block", "mallory"]);
    assert!(out.contains("2 sessions ended here\n"), "{out}");
    for conn in [&mut m, &mut m2] {
        let s = ended_with(conn).await;
        assert_eq!(s.status, status::BANNED, "{s:?}");
        assert!(s.payload.contains("blocked on this server"), "{s:?}");
    }
    // It cannot log in again, on either transport.
    let refused = Conn::login_tcp(server.tcp, &mallory).await.err().unwrap();
    assert!(format!("{refused:#}").contains("blocked"), "{refused:#}");
    assert!(Conn::login_ws(&server.ws, &mallory).await.is_err());
    let users = op.json(&["users"]);
    let row = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["key"] == mallory.public_key().to_hex())
        .cloned()
        .unwrap();
    assert_eq!(
        (&row["blocked"], &row["online"]),
        (&true.into(), &false.into())
    );
    assert_eq!(
        users.as_array().unwrap().len(),
        4,
        "three users and the kit's: {users}"
    );

    // Everyone else goes on; what Bob sends Mallory meanwhile is kept.
    server.until_offline(&mallory.public_key()).await;
    b.send(&message(
        &bob.public_key(),
        &carol.public_key().to_hex(),
        "still here",
    ))
    .await
    .unwrap();
    assert_eq!(b.answer().await.unwrap().status, status::RELAYED);
    assert_eq!(c.message().await.unwrap().msg, "still here");
    let to_m = message_with_id(
        &bob.public_key(),
        &mallory.public_key().to_hex(),
        "later",
        "k1",
    );
    b.send(&to_m).await.unwrap();
    assert_eq!(b.answer().await.unwrap().status, status::STORED);

    // Unblocked, it logs in and gets what was kept.
    let out = op.ok(&["unblock", &mallory.public_key().to_hex()]);
    assert!(out.starts_with("unblocked"), "{out}");
    let mut m = Conn::login_tcp(server.tcp, &mallory).await.unwrap();
    assert_eq!(m.message().await.unwrap().msg, "later");
    assert_eq!(op.json(&["user", "mallory"])["blocked"], false);

    // A key never seen can be blocked before it first comes; a name that is neither a key
    // nor an alias is said so.
    let stranger = new_key();
    op.ok(&["block", &stranger.public_key().to_hex()]);
    assert!(Conn::login_tcp(server.tcp, &stranger).await.is_err());
    assert!(op.fails(&["block", "nobody"]).contains("no user"));
    logged(&server, &["admin: key blocked", "admin: key unblocked"]);
}

#[tokio::test]
async fn an_alias_moves_to_another_user_and_the_from_rule_follows_it() {
    let (server, op, [alice, bob, carol]) = three_users().await;
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut b = Conn::login_ws(&server.ws, &bob).await.unwrap();
    let mut c = Conn::login_tcp(server.tcp, &carol).await.unwrap();
    assert_eq!(register(&mut a, "support").await, status::OK);
    assert_eq!(
        send_as(&mut a, "support", &carol, "s1").await,
        status::RELAYED
    );

    // Reassigned to Bob (named by key): both sessions end, so that each logs in again with
    // what it holds now; Carol's is untouched.
    let out = op.ok(&["reassign", "support", &bob.public_key().to_hex()]);
    assert!(out.contains("support is"), "{out}");
    for conn in [&mut a, &mut b] {
        assert_eq!(ended_with(conn).await.status, status::SHUTTING_DOWN);
    }
    let user = op.json(&["user", "support"]);
    assert_eq!(user["key"], bob.public_key().to_hex(), "{user}");
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut b = Conn::login_ws(&server.ws, &bob).await.unwrap();
    assert_eq!(
        send_as(&mut a, "support", &carol, "s2").await,
        status::SPOOF
    );
    assert_eq!(
        send_as(&mut b, "support", &carol, "s3").await,
        status::RELAYED
    );
    let got = c.message().await.unwrap();
    assert_eq!(got.id.as_deref(), Some("s1"));
    assert_eq!(c.message().await.unwrap().id.as_deref(), Some("s3"));

    // Revoked: nobody holds it, and anyone may register it.
    assert!(op.ok(&["revoke", "SUPPORT"]).contains("revoked"));
    assert_eq!(ended_with(&mut b).await.status, status::SHUTTING_DOWN);
    assert!(op.fails(&["user", "support"]).contains("no user"));
    assert_eq!(register(&mut c, "support").await, status::OK);
    assert!(
        op.fails(&["revoke", "nobody-has-it"])
            .contains("nobody has")
    );
    assert!(op.fails(&["reassign", "x", "nobody"]).contains("no user"));
    logged(
        &server,
        &["admin: alias reassigned", "admin: alias revoked"],
    );
}

#[tokio::test]
async fn a_draining_server_takes_no_new_sessions_while_those_open_go_on() {
    let (server, op, [alice, bob, carol]) = three_users().await;
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut b = Conn::login_ws(&server.ws, &bob).await.unwrap();
    let readyz = || http_request(&server.http, "/readyz", &[], None);
    assert_eq!(readyz().await.unwrap().status, 200);

    assert!(op.ok(&["drain"]).contains("2 sessions open go on"));
    let ready = readyz().await.unwrap();
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body.contains("draining"), "{ready:?}");
    let refused = Conn::login_tcp(server.tcp, &carol).await.err().unwrap();
    assert!(format!("{refused:#}").contains("draining"), "{refused:#}");
    // The sessions open chat on.
    a.send(&message(
        &alice.public_key(),
        &bob.public_key().to_hex(),
        "one more",
    ))
    .await
    .unwrap();
    assert_eq!(b.message().await.unwrap().msg, "one more");

    op.ok(&["resume"]);
    assert_eq!(readyz().await.unwrap().status, 200);
    let _c = Conn::login_tcp(server.tcp, &carol).await.unwrap();
    logged(&server, &["admin: draining", "admin: resumed"]);
}

#[tokio::test]
async fn a_block_on_one_node_ends_the_keys_sessions_on_every_node() {
    let redis = RedisServer::start();
    let node = || TestServer::start_with(&["--store", &redis.url]);
    let (a, b) = (node(), node());
    let op = Operator::of(&a);
    let (mallory, bob) = (new_key(), new_key());
    b.introduce(&[&mallory, &bob]).await;
    let mut m = Conn::login_tcp(b.tcp, &mallory).await.unwrap();
    let mut bee = Conn::login_ws(&b.ws, &bob).await.unwrap();

    // Blocked through node A: its session on node B ends, and neither node lets it in.
    let out = op.ok(&["block", &mallory.public_key().to_hex()]);
    assert!(
        out.contains("0 sessions ended here, and the other nodes end theirs"),
        "{out}"
    );
    assert_eq!(ended_with(&mut m).await.status, status::BANNED);
    for url in [&a.ws, &b.ws] {
        let refused = Conn::login_ws(url, &mallory).await.err().unwrap();
        assert!(format!("{refused:#}").contains("blocked"), "{refused:#}");
    }
    // Node A lists Bob, logged in at node B, as online.
    let users = op.json(&["users"]);
    let bob_row = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["key"] == bob.public_key().to_hex())
        .cloned()
        .unwrap();
    assert_eq!(bob_row["online"], true, "{users}");
    // Bob, on the same node, is not touched.
    bee.send(&message(
        &bob.public_key(),
        &bob.public_key().to_hex(),
        "me",
    ))
    .await
    .unwrap();
    assert_eq!(bee.answer().await.unwrap().status, status::RELAYED);
    assert_eq!(bee.message().await.unwrap().msg, "me");
}
