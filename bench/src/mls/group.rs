//! One group, built in this process from real members, and its operations measured: a commit
//! that adds one member and one that removes one (made by the creator, processed by another
//! member, joined from by the new member), and one application message sealed and opened.
//!
//! Every run starts from the same state. The committer drops its pending commit after each
//! run with `abandon()`, as a client does when the server refuses it, so its group never
//! moves on; the member that processes a commit, and the one that joins from a Welcome, are
//! restored from a snapshot before each run (the restore is not timed), because processing a
//! commit or a Welcome changes them for good.

use std::io::IsTerminal as _;
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flexim_client::protocol::{Datum, Message};
use flexim_mls::{Commit, Identity, Member, Received, Room};
use serde::Serialize;

use super::clock::{Sample, median, time};

/// A built group: its creator, who makes every commit (as a room's admin does), and the state
/// of one other member, which joined from the creator's Welcome.
pub struct Group {
    /// The room, which is the group id.
    pub room: Room,
    /// Members, the creator included.
    pub size: usize,
    /// The creator, with the group at the epoch after the members were added.
    committer: Member,
    /// The other member's state, at the same epoch.
    other: Vec<u8>,
    /// A member neither the committer nor the other one: the one the removal removes.
    victim: Identity,
    /// How long building took (wall).
    pub build_s: f64,
}

/// Sizes of what goes on the wire for one operation.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Wire {
    /// The MLS message (a commit or an application message), in bytes.
    pub message: usize,
    /// The Welcome, for a commit that adds.
    pub welcome: Option<usize>,
    /// The body of the FLEX Message datum that carries them (msgpack, `msg` and `welcome` in
    /// base64, `add`/`remove` keys in hex, a 32-digit id), as a client sends it (§16.4).
    pub datum_body: usize,
}

/// The medians of one group's operations and their sizes.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Members.
    pub size: usize,
    /// Seconds it took to build the group (wall).
    pub build_s: f64,
    /// The committer making the commit that adds one member.
    pub add_commit: Sample,
    /// Another member processing it (`open`, which merges it).
    pub add_process: Sample,
    /// The new member joining from its Welcome.
    pub add_join: Sample,
    /// The committer making the commit that removes one member.
    pub remove_commit: Sample,
    /// Another member processing it.
    pub remove_process: Sample,
    /// Sealing one application message.
    pub seal: Sample,
    /// Another member opening one.
    pub open: Sample,
    /// The add's commit, Welcome and datum.
    pub add_wire: Wire,
    /// The removal's commit and datum.
    pub remove_wire: Wire,
    /// The application message and its datum.
    pub app_wire: Wire,
}

/// Shows how far building has come: on a terminal, one line rewritten in place; in a log (CI),
/// one line per step.
fn progress(what: &str) {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2Kmls: {what} ...");
    } else {
        eprintln!("mls: {what}");
    }
}

/// A random 32-byte identity (a FLEX key's length; the group only compares them).
fn identity() -> Identity {
    let mut id = [0u8; 32];
    flexim_testkit::random(&mut id);
    id
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The body of the Message datum a client sends for `commit` (or, without one, for the
/// application message `msg`) in `room`: the wire a server's body limit applies to.
pub fn datum_body(room: &Room, msg: &[u8], commit: Option<&Commit>) -> usize {
    let keys = |ids: &[Identity]| ids.iter().map(|k| hex(k)).collect();
    let message = Message {
        to: hex(room),
        from: hex(&identity()),
        date: flexim_testkit::unix_now(),
        msg: STANDARD.encode(msg),
        id: Some(hex(&identity()[..16])),
        add: commit.map_or_else(Vec::new, |c| keys(&c.added)),
        remove: commit.map_or_else(Vec::new, |c| keys(&c.removed)),
        welcome: commit.and_then(|c| c.welcome.as_ref().map(|w| STANDARD.encode(w))),
        ..Default::default()
    };
    Datum::Message(message).encode_body().len()
}

impl Group {
    /// Builds a group of `size` members: the creator makes it, `size - 1` new members each
    /// make a KeyPackage, the creator adds them all in one commit and merges it, and the last
    /// of them joins from the Welcome. The tree this leaves is the tree of a room whose
    /// admins make every commit (flexim's rooms): the committer's path is set and every other
    /// parent node is blank, however the members were added.
    pub fn build(size: usize) -> anyhow::Result<Group> {
        ensure!(
            size >= 3,
            "a group needs 3 members at least (committer, other, removed)"
        );
        let started = Instant::now();
        let mut room = [0u8; 16];
        flexim_testkit::random(&mut room);
        let mut committer = Member::new(identity())?;
        committer.create(room)?;
        let mut packages = Vec::with_capacity(size - 1);
        let mut last = None;
        let step = (size / 4).max(1);
        for i in 1..size {
            let id = identity();
            let mut member = Member::new(id)?;
            packages.push((id, member.key_packages(1)?.remove(0)));
            if i == size - 1 {
                last = Some(member);
            }
            if i % step == 0 {
                progress(&format!("group of {size}: {i} of {} KeyPackages", size - 1));
            }
        }
        progress(&format!(
            "group of {size}: the creator adds {} members",
            size - 1
        ));
        let commit = committer.add(room, &packages)?;
        committer.confirm(room)?;
        let mut other = last.context("no member to join")?;
        let welcome = commit
            .welcome
            .as_deref()
            .context("an add without a Welcome")?;
        progress(&format!("group of {size}: a member joins from the Welcome"));
        ensure!(other.join(welcome)? == room, "joined another room");
        let victim = packages[(size - 2) / 2].0;
        let build_s = started.elapsed().as_secs_f64();
        progress(&format!("group of {size}: built in {build_s:.1} s"));
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
        Ok(Group {
            room,
            size,
            committer,
            other: other.snapshot()?,
            victim,
            build_s,
        })
    }

    /// Measures everything, each operation `runs` times (sealing and opening four times as
    /// often, being cheap), and returns the medians.
    pub fn measure(&mut self, runs: usize, plaintext: usize) -> anyhow::Result<Measured> {
        let runs = runs.max(1);
        let (add_commit, add_process, add_join, add_wire) = self.measure_add(runs)?;
        let (remove_commit, remove_process, remove_wire) = self.measure_remove(runs)?;
        let (seal, open, app_wire) = self.measure_messages(runs * 4, plaintext)?;
        Ok(Measured {
            size: self.size,
            build_s: self.build_s,
            add_commit,
            add_process,
            add_join,
            remove_commit,
            remove_process,
            seal,
            open,
            add_wire,
            remove_wire,
            app_wire,
        })
    }

    /// Makes a commit `runs` times with `make`, dropping it after each; the median time and
    /// the last commit.
    fn commit_runs(
        &mut self,
        runs: usize,
        make: impl Fn(&mut Member, Room) -> Result<Commit, flexim_mls::MlsError>,
    ) -> anyhow::Result<(Sample, Commit)> {
        let mut samples = Vec::with_capacity(runs);
        let mut last = None;
        for _ in 0..runs {
            let (commit, sample) = time(|| make(&mut self.committer, self.room));
            self.committer.abandon(self.room)?;
            samples.push(sample);
            last = Some(commit?);
        }
        Ok((median(&samples), last.context("no run")?))
    }

    /// The other member processing `commit`, from the same state each run; checks that it
    /// adds and removes what it should.
    fn process_runs(&self, runs: usize, commit: &Commit) -> anyhow::Result<Sample> {
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let mut other = Member::restore(&self.other)?;
            let (got, sample) = time(|| other.open(self.room, &commit.message));
            match got? {
                Received::Commit { added, removed, .. }
                    if added == commit.added && removed == commit.removed => {}
                got => bail!("the other member read {got:?} from a commit"),
            }
            samples.push(sample);
        }
        Ok(median(&samples))
    }

    /// Adding one member: the commit, its processing, and the join from its Welcome.
    fn measure_add(&mut self, runs: usize) -> anyhow::Result<(Sample, Sample, Sample, Wire)> {
        let id = identity();
        let mut newcomer = Member::new(id)?;
        let package = newcomer.key_packages(1)?.remove(0);
        let fresh = newcomer.snapshot()?;
        let packages = [(id, package)];
        let (commit_t, commit) = self.commit_runs(runs, |m, room| m.add(room, &packages))?;
        let process_t = self.process_runs(runs, &commit)?;
        let welcome = commit
            .welcome
            .as_deref()
            .context("an add without a Welcome")?;
        let mut joins = Vec::with_capacity(runs);
        for _ in 0..runs {
            let mut newcomer = Member::restore(&fresh)?;
            let (room, sample) = time(|| newcomer.join(welcome));
            ensure!(room? == self.room, "the new member joined another room");
            joins.push(sample);
        }
        let wire = Wire {
            message: commit.message.len(),
            welcome: Some(welcome.len()),
            datum_body: datum_body(&self.room, &commit.message, Some(&commit)),
        };
        Ok((commit_t, process_t, median(&joins), wire))
    }

    /// Removing one member: the commit and its processing.
    fn measure_remove(&mut self, runs: usize) -> anyhow::Result<(Sample, Sample, Wire)> {
        let victim = [self.victim];
        let (commit_t, commit) = self.commit_runs(runs, |m, room| m.remove(room, &victim))?;
        let process_t = self.process_runs(runs, &commit)?;
        let wire = Wire {
            message: commit.message.len(),
            welcome: commit.welcome.as_ref().map(Vec::len),
            datum_body: datum_body(&self.room, &commit.message, Some(&commit)),
        };
        Ok((commit_t, process_t, wire))
    }

    /// Sealing `runs` application messages of `plaintext` bytes, and another member opening
    /// each (in order, as they would arrive).
    fn measure_messages(
        &mut self,
        runs: usize,
        plaintext: usize,
    ) -> anyhow::Result<(Sample, Sample, Wire)> {
        let text = vec![b'x'; plaintext];
        let mut reader = Member::restore(&self.other)?;
        let (mut seals, mut opens) = (Vec::new(), Vec::new());
        let mut last = Vec::new();
        for _ in 0..runs {
            let (sealed, sample) = time(|| self.committer.seal(self.room, &text));
            let sealed = sealed?;
            seals.push(sample);
            let (got, sample) = time(|| reader.open(self.room, &sealed));
            match got? {
                Received::Application { plaintext, .. } if plaintext == text => {}
                got => bail!("the other member read {got:?} from a message"),
            }
            opens.push(sample);
            last = sealed;
        }
        let wire = Wire {
            message: last.len(),
            welcome: None,
            datum_body: datum_body(&self.room, &last, None),
        };
        Ok((median(&seals), median(&opens), wire))
    }
}
