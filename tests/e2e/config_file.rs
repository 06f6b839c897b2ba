//! The configuration file (`flexim-server --config FILE`, issue 14): what `--print-config`
//! writes loads back; the file sets what neither the environment nor a flag sets; a bad file
//! is one line naming the key, and the server does not start.

use std::process::Command;

use flexim_protocol::datum::Status;
use flexim_protocol::{Datum, SecretKey, status};
use flexim_tests::{Conn, Options, TempDir, TestServer, bin_dir, message_with_id, new_key};

/// `flexim-server ARGS` with `env`: exit code and stderr.
fn server(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(bin_dir().join("flexim-server"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` to `name` in `dir` and returns its path.
fn file(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.0.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// The first answer to a message from `from` to `to` that is no notice.
async fn write(c: &mut Conn, from: &SecretKey, to: &SecretKey, id: &str) -> Status {
    let m = message_with_id(&from.public_key(), &to.public_key().to_hex(), "hi", id);
    c.send(&m).await.unwrap();
    c.answer().await.unwrap()
}

/// How many messages a stranger gets into a user's requests box on `server`.
async fn box_size(server: &TestServer) -> usize {
    let (user, stranger) = (new_key(), new_key());
    let _u = Conn::login_tcp(server.tcp, &user).await.unwrap();
    let mut s = Conn::login_tcp(server.tcp, &stranger).await.unwrap();
    for n in 0..10 {
        let answer = write(&mut s, &stranger, &user, &format!("m-{n}")).await;
        if answer.status == status::NOT_ACCEPTED {
            return n;
        }
        assert!(
            matches!(answer.status, status::RELAYED | status::STORED),
            "{answer:?}"
        );
    }
    panic!("no cap");
}

fn launch(config: &str, args: &[&str], env: &[(&str, &str)]) -> TestServer {
    let mut all = vec!["--config".to_string(), config.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    TestServer::launch(Options {
        args: all,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Options::default()
    })
    .unwrap()
}

#[test]
fn print_config_lists_every_setting_and_what_it_prints_loads_back() {
    let out = Command::new(bin_dir().join("flexim-server"))
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // Every flag of --help is a key of the file, with its variable.
    let help = Command::new(bin_dir().join("flexim-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    // The flags --help defines: its lines that begin with one.
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '=']).next())
        .filter(|w| !["help", "version", "config", "print-config"].contains(w))
        .collect();
    assert!(flags.len() > 30, "{flags:?}");
    for flag in &flags {
        assert!(
            text.contains(&format!("\n#{flag} =")),
            "no `{flag}` in:\n{text}"
        );
    }
    assert!(text.contains("#max-rooms = 100\n"), "{text}");
    assert!(text.contains("# Environment: FLEXIM_MAX_ROOMS\n"), "{text}");
    // With every default uncommented, the file is valid and the server starts on it.
    let dir = TempDir::new("print-config");
    let uncommented: String = text
        .lines()
        .filter_map(|l| {
            let setting = l.strip_prefix('#')?;
            let (_, value) = setting.split_once(" = ")?;
            (!value.is_empty()).then(|| format!("{setting}\n"))
        })
        .collect();
    assert!(uncommented.lines().count() > 30, "{uncommented}");
    let config = file(&dir, "all.toml", &uncommented);
    let mut server = launch(&config, &[], &[]);
    assert!(server.stop());
}

#[tokio::test]
async fn the_file_sets_what_the_environment_and_flags_do_not() {
    let dir = TempDir::new("config-layers");
    let config = file(
        &dir,
        "flexim.toml",
        "# a small server\nrequest-messages = 1\nname = \"family\"\n",
    );
    // The file alone.
    let server = launch(&config, &[], &[]);
    assert_eq!(box_size(&server).await, 1);
    drop(server);
    // The environment over the file.
    let server = launch(&config, &[], &[("FLEXIM_REQUEST_MESSAGES", "2")]);
    assert_eq!(box_size(&server).await, 2);
    drop(server);
    // A flag over both; the file's other settings still hold.
    let server = launch(
        &config,
        &["--request-messages", "3"],
        &[("FLEXIM_REQUEST_MESSAGES", "2")],
    );
    assert_eq!(box_size(&server).await, 3);
    let mut c = Conn::tcp(server.tcp).await.unwrap();
    match c.datum().await.unwrap() {
        Datum::User(u) => assert_eq!(u.aliases, ["family"]),
        other => panic!("expected the server's User, got {other:?}"),
    }
}

#[test]
fn a_bad_file_is_one_line_naming_the_key_and_nothing_starts() {
    let dir = TempDir::new("config-bad");
    let data = dir.0.join("data").to_string_lossy().into_owned();
    for (name, text, says) in [
        (
            "unknown.toml",
            "max-rooms = 5\nmax-romos = 3\n",
            "line 2: unknown setting `max-romos`",
        ),
        (
            "value.toml",
            "max-rooms = \"many\"\n",
            "line 1: `max-rooms`: invalid value",
        ),
        ("secs.toml", "write-timeout = -1\n", "`write-timeout`"),
        (
            "table.toml",
            "[limits]\nmax-rooms = 3\n",
            "`limits`: is a table",
        ),
        (
            "syntax.toml",
            "max-rooms = 3\nname = \"unclosed\n",
            "line 2",
        ),
        (
            "switch.toml",
            "config = \"other.toml\"\n",
            "unknown setting `config`",
        ),
    ] {
        let path = file(&dir, name, text);
        let args = [
            "--config",
            &path,
            "--tcp",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data",
            &data,
        ];
        let (code, err) = server(&args, &[("RUST_BACKTRACE", "1")]);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: one line: {err}");
        assert!(err.contains(&path) && err.contains(says), "{name}: {err}");
    }
    let (code, err) = server(&["--config", "/nonexistent/flexim.toml"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("cannot read the configuration file /nonexistent/flexim.toml"),
        "{err}"
    );
    // From the environment too.
    let path = file(&dir, "env.toml", "max-rooms = -4\n");
    let (code, err) = server(&[], &[("FLEXIM_CONFIG", &path)]);
    assert_eq!(code, Some(2));
    assert!(err.contains("`max-rooms`"), "{err}");
    assert!(!dir.0.join("data").exists(), "nothing was started");
}

#[tokio::test]
async fn sighup_applies_the_files_new_limits_and_a_bad_file_changes_nothing() {
    let dir = TempDir::new("config-reload");
    let config = file(&dir, "flexim.toml", "request-messages = 1\n");
    let server = launch(&config, &[], &[]);
    assert_eq!(box_size(&server).await, 1);
    file(&dir, "flexim.toml", "request-messages = 3\nmax-rooms = 7\n");
    server.hang_up();
    server
        .until_logged("reloaded on SIGHUP: request-messages: 1 -> 3, max-rooms: 100 -> 7")
        .await;
    assert_eq!(box_size(&server).await, 3);
    // A file that no longer parses: logged, and the limits stay.
    file(&dir, "flexim.toml", "request-messages = \"lots\"\n");
    server.hang_up();
    server
        .until_logged("reload on SIGHUP failed, the limits are unchanged")
        .await;
    assert_eq!(box_size(&server).await, 3);
}
