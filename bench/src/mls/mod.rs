//! `mls`: what a room's group operations cost, by the size of the group, measured in this
//! process with `flexim_mls::Member` (the profile both clients run) and no server. For each
//! size a group is built once from real members with real KeyPackages ([`group`]); then the
//! creator adds one member and removes one (each commit made several times from the same
//! state), another member processes each commit, the new member joins from the Welcome, and
//! one application message is sealed and opened. The bytes of each commit, Welcome and the
//! FLEX datum carrying them are checked against the server's body limits, since a commit and
//! its Welcome must fit one datum (docs/PROTOCOL.md §16.8).

mod clock;
mod group;
mod limits;

use std::process::ExitCode;

use flexim_client::protocol::MAX_BODY;
use flexim_client::protocol::link::MAX_LINKED_BODY;
use serde::Serialize;

use clock::Sample;
use group::{Group, Measured, Wire};

/// The server's default body limit (`--max-body`, 48 KiB).
const DEFAULT_MAX_BODY: usize = 48 * 1024;

/// Options of `mls`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Group sizes (members, the committer included; at least 3 each), comma-separated. Every
    /// figure is also given as a ratio to the first size's. CI passes small ones.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    sizes: Vec<usize>,
    /// Runs of each group operation; the report gives the median (sealing and opening run
    /// four times as often).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Plaintext bytes of the application message.
    #[arg(long, default_value_t = 600)]
    size: usize,
    /// The server body limit to compare datums with (the server's `--max-body`).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY)]
    max_body: usize,
    /// Also find, by bisection over group sizes, the largest group whose commit adding one
    /// member (and one removing one) still fits the body limit and the hard limit (about
    /// half a minute).
    #[arg(long)]
    limits: bool,
    /// Print the figures as one JSON object instead of the tables.
    #[arg(long)]
    json: bool,
}

/// Everything measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Runs per operation (the figures are medians).
    pub runs: usize,
    /// Plaintext bytes of the application message.
    pub plaintext: usize,
    /// The body limit datums were compared with.
    pub max_body: usize,
    /// The largest datum body inside a link record (the hard limit: a record's body is at most
    /// 65535 bytes and holds the datum's prefix and the AEAD tag too).
    pub hard_limit: usize,
    /// One entry per group size, in the order asked.
    pub groups: Vec<Measured>,
    /// The largest groups whose commits fit, with `--limits`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<limits::Limits>,
}

/// Runs the measurement.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!args.sizes.is_empty(), "--sizes names no size");
    let mut groups = Vec::new();
    for &size in &args.sizes {
        let mut group = Group::build(size)?;
        eprintln!(
            "mls: group of {size}: measuring ({} runs each) ...",
            args.runs
        );
        groups.push(group.measure(args.runs, args.size.max(1))?);
    }
    let limits = match args.limits {
        true => Some(limits::find(args.max_body, MAX_LINKED_BODY)?),
        false => None,
    };
    let report = Report {
        limits,
        runs: args.runs.max(1),
        plaintext: args.size.max(1),
        max_body: args.max_body,
        hard_limit: MAX_LINKED_BODY,
        groups,
    };
    crate::finish(args.json, &report, Report::summary, true, "")
}

/// A duration in microseconds, in the unit that reads best.
fn duration(us: f64) -> String {
    match us {
        u if u >= 1e6 => format!("{:.2} s", u / 1e6),
        u if u >= 1e3 => format!("{:.2} ms", u / 1e3),
        u => format!("{u:.1} us"),
    }
}

/// A byte count in the unit that reads best.
fn bytes(n: usize) -> String {
    match n {
        n if n >= 10 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// A value and its ratio to the first column's.
fn cell(text: String, value: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{text} ({:.1}x)", value / base)
    } else {
        text
    }
}

impl Report {
    /// The rows of one kind of figure: a name, then one cell per size.
    fn row<F: Fn(&Measured) -> Option<f64>>(
        &self,
        name: &str,
        get: F,
        show: fn(f64) -> String,
    ) -> String {
        let base = self.groups.first().and_then(&get).unwrap_or(0.0);
        let mut line = format!("{name:<34}");
        for g in &self.groups {
            let text = get(g).map_or("-".to_string(), |v| cell(show(v), v, base));
            line += &format!(" {text:>22}");
        }
        line + "\n"
    }

    /// Whether a datum body fits the server's limit and the hard one, as a cell.
    fn fits(&self, body: usize) -> String {
        let yes = |b: bool| if b { "yes" } else { "NO" };
        format!(
            "{} / {}",
            yes(body <= self.max_body),
            yes(body <= self.hard_limit)
        )
    }

    /// The human summary: a table of times (CPU, then wall), then one of sizes.
    fn summary(&self) -> String {
        let mut s = format!(
            "MLS group operations (flexim_mls::Member, suite 0x0003), median of {} runs; each figure (ratio to the {}-member group)\n",
            self.runs,
            self.groups.first().map_or(0, |g| g.size)
        );
        s += &self.times();
        s += &self.sizes();
        s += &format!(
            "build (once per size, wall):        {}\n",
            self.groups
                .iter()
                .map(|g| format!("{} members {:.1} s", g.size, g.build_s))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(l) = &self.limits {
            s += &format!(
                "largest group that can still commit within {} B / {} B: adding one member {} / {} members (so a room grows to {} / {}), removing one {} / {} members\n",
                self.max_body,
                self.hard_limit,
                l.add_server,
                l.add_hard,
                l.add_server + 1,
                l.add_hard + 1,
                l.remove_server,
                l.remove_hard
            );
        }
        s += &format!(
            "Limits: the server's --max-body ({} B here, {DEFAULT_MAX_BODY} B by default) and the hard one, {} B: a link record of {MAX_BODY} B less the datum prefix and the AEAD tag.",
            self.max_body, self.hard_limit
        );
        s
    }

    /// A table's header line: its title, then one column per size.
    fn header(&self, title: &str) -> String {
        let mut h = format!("{title:<34}");
        for g in &self.groups {
            h += &format!(" {:>22}", format!("{} members", g.size));
        }
        h + "\n"
    }

    /// The tables of times: CPU, then wall.
    fn times(&self) -> String {
        type Get = fn(&Measured) -> Sample;
        let ops: [(&str, Get); 7] = [
            ("add: commit (committer)", |m| m.add_commit),
            ("add: process (another member)", |m| m.add_process),
            ("add: join from Welcome (new)", |m| m.add_join),
            ("remove: commit (committer)", |m| m.remove_commit),
            ("remove: process (another member)", |m| m.remove_process),
            ("seal one message", |m| m.seal),
            ("open one message", |m| m.open),
        ];
        let mut s = String::new();
        for (title, wall) in [
            ("CPU time (process, all threads)", false),
            ("wall time", true),
        ] {
            s += &self.header(title);
            for (name, get) in ops {
                let pick = move |m: &Measured| {
                    let t = get(m);
                    Some(if wall { t.wall_us } else { t.cpu_us })
                };
                s += &self.row(name, pick, duration);
            }
        }
        s
    }

    /// The table of sizes, and whether each commit's datum fits.
    fn sizes(&self) -> String {
        type Size = fn(&Measured) -> Option<usize>;
        let sizes: [(&str, Size); 7] = [
            ("add: commit", |m| Some(m.add_wire.message)),
            ("add: Welcome", |m| m.add_wire.welcome),
            ("add: datum body (base64)", |m| Some(m.add_wire.datum_body)),
            ("remove: commit", |m| Some(m.remove_wire.message)),
            ("remove: datum body", |m| Some(m.remove_wire.datum_body)),
            ("message: sealed", |m| Some(m.app_wire.message)),
            ("message: datum body", |m| Some(m.app_wire.datum_body)),
        ];
        let mut s = self.header("bytes");
        for (name, get) in sizes {
            s += &self.row(name, |m| get(m).map(|n| n as f64), |v| bytes(v as usize));
        }
        type Datum = fn(&Measured) -> Wire;
        let datums: [(&str, Datum); 2] = [
            ("add: datum fits? (server / hard)", |m| m.add_wire),
            ("remove: datum fits? (server / hard)", |m| m.remove_wire),
        ];
        for (name, get) in datums {
            let mut line = format!("{name:<34}");
            for g in &self.groups {
                line += &format!(" {:>22}", self.fits(get(g).datum_body));
            }
            s += &(line + "\n");
        }
        s
    }
}
