//! The admin listener's actions through `flexim-server admin` (issue 14), against a real
//! server: the sessions with their transports, a user's record and queue, purging a queue,
//! stats and stopping; none without the token, and none that shows a message.

use std::process::Command;
use std::time::Duration;

use flexim_protocol::{Datum, SecretKey, status};
use flexim_tests::{Conn, TempDir, TestServer, bin_dir, http_request, message_with_id, new_key};

/// `flexim-server --data DATA --admin ADMIN admin ARGS`: exit code, stdout, stderr.
pub(crate) fn admin(data: &str, addr: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin_dir().join("flexim-server"))
        .args(["--data", data, "--admin", addr, "admin"])
        .args(args)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

/// `flexim-server admin ARGS` that must succeed, as JSON.
pub(crate) fn admin_json(data: &str, addr: &str, args: &[&str]) -> serde_json::Value {
    let (code, out, err) = admin(data, addr, args);
    assert_eq!(code, Some(0), "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Sends `id` from `from` to `to` and returns the answer's code.
async fn send(c: &mut Conn, from: &SecretKey, to: &SecretKey, id: &str) -> i8 {
    let m = message_with_id(
        &from.public_key(),
        &to.public_key().to_hex(),
        "secret words",
        id,
    );
    c.send(&m).await.unwrap();
    c.answer().await.unwrap().status
}

#[tokio::test]
async fn an_operator_lists_sessions_looks_up_a_user_purges_a_queue_and_stops_the_server() {
    let mut server = TestServer::start();
    let addr = server.admin_addr().unwrap();
    let data = server.data_dir().to_string_lossy().into_owned();
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut b = Conn::login_ws(&server.ws, &bob).await.unwrap();
    b.befriend(&alice.public_key()).await.unwrap();

    // The sessions, with their transports and addresses.
    let list = admin_json(&data, &addr, &["sessions"]);
    let of = |key: &SecretKey| {
        let hex = key.public_key().to_hex();
        list.as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == hex)
            .cloned()
            .unwrap()
    };
    assert_eq!(of(&alice)["transport"], "tcp");
    assert_eq!(of(&bob)["transport"], "ws");
    assert_eq!(of(&alice)["address"], "127.0.0.1");

    // Bob leaves; Alice writes to him; his queue holds them; the operator purges it.
    drop(b);
    server.until_offline(&bob.public_key()).await;
    for id in ["m1", "m2", "m3"] {
        assert_eq!(send(&mut a, &alice, &bob, id).await, status::STORED);
    }
    let bob_hex = bob.public_key().to_hex();
    let user = admin_json(&data, &addr, &["user", &bob_hex]);
    assert_eq!(
        (
            user["stored"].as_u64(),
            user["sessions"].as_array().map(Vec::len)
        ),
        (Some(3), Some(0)),
        "{user}"
    );
    let (code, out, err) = admin(&data, &addr, &["purge", &bob_hex]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("purged 3 stored messages"), "{out}");
    assert_eq!(admin_json(&data, &addr, &["user", &bob_hex])["stored"], 0);
    let logs = server.logs();
    assert!(logs.contains("admin: queue purged"), "{logs}");
    // Nothing the operator saw or logged holds a message's words.
    assert!(!logs.contains("secret words"));
    let mut b = Conn::login_ws(&server.ws, &bob).await.unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Datum::Message(m) = b.datum().await.unwrap() {
                return m;
            }
        }
    });
    assert!(nothing.await.is_err(), "a purged message was delivered");
    let stats = admin_json(&data, &addr, &["stats"]);
    assert!(stats["sessions"].as_u64().unwrap() >= 2, "{stats}");
    // The same from the configuration file the server would run on.
    let dir = TempDir::new("admin-config");
    let config = dir.0.join("flexim.toml");
    std::fs::write(&config, format!("data = {data:?}\nadmin = {addr:?}\n")).unwrap();
    let out = Command::new(bin_dir().join("flexim-server"))
        .arg("--config")
        .arg(&config)
        .args(["admin", "stats"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"sessions\""));
    let (code, _, err) = admin(&data, &addr, &["user", "nobody-here"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no user"), "{err}");

    // Without the token, nothing: neither the CLI from another data directory, nor a bare
    // request.
    let other = TempDir::new("admin-other");
    std::fs::write(other.0.join("admin.token"), "11".repeat(32)).unwrap();
    let (code, _, err) = admin(&other.0.to_string_lossy(), &addr, &["sessions"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("admin token"), "{err}");
    let bare = http_request(&format!("http://{addr}/"), "/admin/sessions", &[], None)
        .await
        .unwrap();
    assert_eq!(bare.status, 401, "{bare:?}");

    // Stop: the server drains and exits by itself.
    let (code, out, err) = admin(&data, &addr, &["stop"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("stopping"), "{out}");
    let mut gone = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(server.tcp).is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the server stopped");
    assert!(server.stop(), "and exited cleanly");
    let logs = server.logs();
    assert!(
        logs.contains("admin: stop asked") && logs.contains("drained:"),
        "{logs}"
    );
}
