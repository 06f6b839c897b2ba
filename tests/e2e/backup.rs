//! Backups of the embedded store (issue 14): `flexim-server backup` while the server runs and
//! users write, `restore` with it stopped; what was stored before the backup is delivered
//! after the restore, and nothing written after it is. The admin action needs the token.

use std::process::Command;

use flexim_protocol::{Datum, SecretKey, status};
use flexim_tests::{Conn, TempDir, TestServer, bin_dir, message_with_id, new_key};

/// `flexim-server ARGS`: exit code, stdout, stderr.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin_dir().join("flexim-server"))
        .args(args)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

/// Sends `id` from `from` to `to` and returns the answer's code.
async fn send(c: &mut Conn, from: &SecretKey, to: &SecretKey, id: &str) -> i8 {
    let m = message_with_id(&from.public_key(), &to.public_key().to_hex(), id, id);
    c.send(&m).await.unwrap();
    c.answer().await.unwrap().status
}

#[tokio::test]
async fn a_backup_made_while_users_write_restores_what_was_stored_before_it() {
    let mut server = TestServer::start_with(&["--admin", "127.0.0.1:0"]);
    let admin = server.admin_addr().unwrap();
    let data = server.data_dir().to_string_lossy().into_owned();
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    // Bob accepts Alice (so her messages are not capped as a stranger's), and goes away.
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    b.befriend(&alice.public_key()).await.unwrap();
    drop(b);
    server.until_offline(&bob.public_key()).await;
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    for id in ["before-1", "before-2", "before-3"] {
        assert_eq!(send(&mut a, &alice, &bob, id).await, status::STORED);
    }
    let dir = TempDir::new("backup");
    let file = dir.0.join("flexim.backup");
    let file_arg = file.to_string_lossy().into_owned();

    // Without the token (another data directory), nothing is made.
    let other = dir.0.join("elsewhere").to_string_lossy().into_owned();
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(format!("{other}/admin.token"), "00".repeat(32)).unwrap();
    let (code, _, err) = run(&[
        "--data", &other, "--admin", &admin, "backup", "--to", &file_arg,
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("admin token"), "{err}");
    assert!(!file.exists());

    // With it, while Alice goes on writing.
    let (from, to) = (alice.clone(), bob.clone());
    let writer = tokio::spawn(async move {
        for n in 0..50 {
            assert_eq!(
                send(&mut a, &from, &to, &format!("during-{n}")).await,
                status::STORED
            );
        }
        a
    });
    let (code, out, err) = run(&[
        "--data", &data, "--admin", &admin, "backup", "--to", &file_arg,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("backup: ") && out.contains(&file_arg),
        "{out}"
    );
    let mut a = writer.await.unwrap();
    assert!(server.logs().contains("admin: backup made"));
    // A backup never overwrites a file.
    let (code, _, err) = run(&[
        "--data", &data, "--admin", &admin, "backup", "--to", &file_arg,
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("exists already"), "{err}");
    assert_eq!(send(&mut a, &alice, &bob, "after").await, status::STORED);
    drop(a);

    // A restore is refused while the server runs, and changes nothing.
    let (code, _, err) = run(&["--data", &data, "restore", "--from", &file_arg]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("stop the server first"), "{err}");

    assert!(server.stop());
    let (code, out, err) = run(&["--data", &data, "restore", "--from", &file_arg]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("restored "), "{out}");
    let server = server.restart();

    // Bob gets what was stored before the backup, in order, then some of what came during
    // it (the snapshot's), and never what came after.
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut got = Vec::new();
    while let Ok(Ok(d)) =
        tokio::time::timeout(std::time::Duration::from_millis(700), b.datum()).await
    {
        if let Datum::Message(m) = d {
            got.push(m.id.unwrap());
        }
    }
    assert_eq!(got[..3], ["before-1", "before-2", "before-3"], "{got:?}");
    let during = &got[3..];
    assert!(
        during
            .iter()
            .enumerate()
            .all(|(n, id)| *id == format!("during-{n}")),
        "{got:?}"
    );
    assert!(!got.iter().any(|id| id == "after"), "{got:?}");
}

#[test]
fn a_damaged_backup_is_refused_and_the_store_kept() {
    let dir = TempDir::new("restore-bad");
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("flexim.redb"), b"").unwrap();
    let junk = dir.0.join("junk.backup");
    std::fs::write(&junk, b"not a database at all").unwrap();
    let (code, _, err) = run(&[
        "--data",
        &data.to_string_lossy(),
        "restore",
        "--from",
        &junk.to_string_lossy(),
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot restore"), "{err}");
    assert_eq!(std::fs::read(data.join("flexim.redb")).unwrap(), b"");
}
