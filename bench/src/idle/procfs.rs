//! What `/proc` says about a process (the server, or this tool itself): memory, CPU time and
//! open files, and the kernel's TCP memory.

use anyhow::{Context as _, anyhow};
use serde::Serialize;

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ, 100 on every Linux this runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// The memory of one process, from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// Resident set size (`VmRSS`): every resident page, file-backed ones included.
    pub vm_rss_kib: u64,
    /// Resident anonymous memory (`RssAnon`): the heap and the stacks, what connections cost.
    pub rss_anon_kib: u64,
}

/// Reads `VmRSS` and `RssAnon` from the text of `/proc/<pid>/status`.
fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some(Memory {
        vm_rss_kib: field("VmRSS")?,
        rss_anon_kib: field("RssAnon")?,
    })
}

/// The soft limit on open files from the text of `/proc/<pid>/limits`.
fn parse_open_files_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// User plus system CPU time in clock ticks from the text of `/proc/<pid>/stat`. The command
/// name in parentheses may hold spaces, so fields are counted after its closing parenthesis.
fn parse_cpu_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name come state (field 3), ..., utime (field 14) and stime (field 15).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Kernel memory of all TCP sockets (`mem`, in pages) from the text of `/proc/net/sockstat`.
fn parse_sockstat_tcp_pages(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mem" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// A process this tool can look at in `/proc` (the server, or this tool itself); `soak` reads
/// CPU time with it too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Proc(pub(crate) Option<u32>);

impl Proc {
    fn path(&self, what: &str) -> String {
        match self.0 {
            Some(pid) => format!("/proc/{pid}/{what}"),
            None => format!("/proc/self/{what}"),
        }
    }

    pub(super) fn memory(&self) -> anyhow::Result<Memory> {
        let path = self.path("status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_status(&text).ok_or_else(|| anyhow!("no VmRSS/RssAnon in {path}"))
    }

    pub(crate) fn cpu_secs(&self) -> f64 {
        std::fs::read_to_string(self.path("stat"))
            .ok()
            .and_then(|t| parse_cpu_ticks(&t))
            .map_or(0.0, |t| t as f64 / TICKS_PER_SEC)
    }

    pub(super) fn open_files(&self) -> usize {
        std::fs::read_dir(self.path("fd"))
            .ok()
            .map_or(0, |d| d.count())
    }

    pub(super) fn open_files_limit(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.path("limits")).ok()?;
        parse_open_files_limit(&text)
    }
}

/// Kernel memory of all TCP sockets on this machine, in KiB (0 when unknown). Socket buffers
/// live in the kernel, not in the server's RSS, so this is reported beside it.
pub(super) fn kernel_tcp_kib() -> u64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|t| parse_sockstat_tcp_pages(&t))
        .map_or(0, |pages| pages * 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_rss_and_anonymous_memory() {
        let text = "Name:\tflexim-server\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\n\
                    RssAnon:\t    8000 kB\nRssFile:\t    4345 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Memory {
                vm_rss_kib: 12345,
                rss_anon_kib: 8000
            })
        );
        assert_eq!(parse_status("VmRSS:\t1 kB\n"), None);
    }

    #[test]
    fn limits_give_the_soft_open_files_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             95000                95000                processes \n\
                    Max open files            20000                20000                files     \n";
        assert_eq!(parse_open_files_limit(text), Some(20000));
        assert_eq!(parse_open_files_limit("Max processes 1 1\n"), None);
    }

    #[test]
    fn stat_gives_user_plus_system_ticks_even_with_spaces_in_the_name() {
        let text = "4242 (flexim (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 25 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(text), Some(175));
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn sockstat_gives_tcp_pages() {
        let text =
            "sockets: used 300\nTCP: inuse 12 orphan 0 tw 3 alloc 15 mem 42\nUDP: inuse 1 mem 2\n";
        assert_eq!(parse_sockstat_tcp_pages(text), Some(42));
        assert_eq!(parse_sockstat_tcp_pages("UDP: inuse 1 mem 2\n"), None);
    }
}
