//! `mls --limits`: the largest group whose next commit still fits one datum, found by bisection
//! over group sizes, for a commit adding one member and one removing one, against the server's
//! body limit and the hard one. Both commits grow with the group: the Welcome carries the whole
//! ratchet tree, and in a room whose admins make every commit every other parent node of the
//! tree is blank, so the commit's path secrets are encrypted to every member one by one.

use std::collections::BTreeMap;

use anyhow::Context as _;
use flexim_mls::Member;
use serde::Serialize;

use super::group::datum_body;

/// The largest size probed: far beyond where either commit fits the hard limit.
const MOST: usize = 2048;

/// The largest group sizes (members before the commit) whose commits fit.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    /// Adding one member, within the server's `--max-body`.
    pub add_server: usize,
    /// Adding one member, within the hard limit.
    pub add_hard: usize,
    /// Removing one member, within the server's `--max-body`.
    pub remove_server: usize,
    /// Removing one member, within the hard limit.
    pub remove_hard: usize,
}

/// Datum bodies of the commits at each size probed, so that no size is built twice.
#[derive(Default)]
struct Probes(BTreeMap<usize, (usize, usize)>);

impl Probes {
    /// The datum bodies of a commit adding one member to a group of `size`, and of one removing
    /// one from it: the group built as `Group::build` builds it, without the joiner.
    fn at(&mut self, size: usize) -> anyhow::Result<(usize, usize)> {
        if let Some(found) = self.0.get(&size) {
            return Ok(*found);
        }
        let mut room = [0u8; 16];
        flexim_testkit::random(&mut room);
        let mut committer = Member::new(identity())?;
        committer.create(room)?;
        let mut packages = Vec::with_capacity(size);
        for _ in 1..=size {
            let id = identity();
            packages.push((id, Member::new(id)?.key_packages(1)?.remove(0)));
        }
        let newcomer = packages.pop().context("no newcomer")?;
        committer.add(room, &packages)?;
        committer.confirm(room)?;
        let add = committer.add(room, &[newcomer])?;
        committer.abandon(room)?;
        let remove = committer.remove(room, &[packages[0].0])?;
        let found = (
            datum_body(&room, &add.message, Some(&add)),
            datum_body(&room, &remove.message, Some(&remove)),
        );
        eprintln!(
            "mls: limits: a group of {size}: add datum {} B, remove datum {} B",
            found.0, found.1
        );
        self.0.insert(size, found);
        Ok(found)
    }

    /// The largest size in `3..=MOST` whose datum (picked by `which`) fits `limit`, assuming
    /// datums grow with the group; `MOST` if even that fits.
    fn largest(
        &mut self,
        limit: usize,
        which: fn((usize, usize)) -> usize,
    ) -> anyhow::Result<usize> {
        let (mut fits, mut over) = (3, MOST + 1);
        if which(self.at(MOST)?) <= limit {
            return Ok(MOST);
        }
        while over - fits > 1 {
            let mid = fits + (over - fits) / 2;
            if which(self.at(mid)?) <= limit {
                fits = mid;
            } else {
                over = mid;
            }
        }
        Ok(fits)
    }
}

/// A random 32-byte identity.
fn identity() -> [u8; 32] {
    let mut id = [0u8; 32];
    flexim_testkit::random(&mut id);
    id
}

/// Finds the four limits for a server body limit of `server` bytes and the hard one, `hard`.
pub fn find(server: usize, hard: usize) -> anyhow::Result<Limits> {
    let mut probes = Probes::default();
    let add = |d: (usize, usize)| d.0;
    let remove = |d: (usize, usize)| d.1;
    Ok(Limits {
        add_server: probes.largest(server, add)?,
        add_hard: probes.largest(hard, add)?,
        remove_server: probes.largest(server, remove)?,
        remove_hard: probes.largest(hard, remove)?,
    })
}
