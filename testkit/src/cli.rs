//! The `flexim` command-line client as a process, for tests of what its users see.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::{WAIT, bin_dir};

/// A `flexim` CLI process with piped standard streams, read line by line.
pub struct Cli {
    /// The process.
    pub child: Child,
    /// Lines from its stdout, read on a thread.
    lines: std::sync::mpsc::Receiver<String>,
    /// Every stdout line seen so far, for failure messages.
    pub seen: Vec<String>,
}

impl Cli {
    /// Starts `flexim ARGS` with piped stdin and stdout (stderr goes to the test's stderr).
    pub fn spawn(args: &[&str]) -> Cli {
        let mut child = Command::new(bin_dir().join("flexim"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("flexim runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Cli {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits up to [`WAIT`] for a stdout line containing `needle` and returns it.
    pub fn expect(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// Writes one line to the process's stdin.
    pub fn type_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `flexim ARGS` to completion: (exit code, stdout, stderr).
pub fn flexim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin_dir().join("flexim"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("flexim runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
