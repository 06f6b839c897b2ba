//! The Redis engine's Lua scripts, one per kind of write, and how each write calls its script.

use ::redis::{Script, ScriptInvocation};
use flexim_protocol::keys::alias_key;

use super::super::QueueLimits;
use super::super::bounds::Mode;
use super::super::entry::encode_entry;
use super::super::ties::TieChange;
use super::super::writes::Op;
use super::{
    aliases_key, bytes_prefix, discoverable_key, expiry_key, packages_key, queue_prefix, room_key,
    rooms_of_prefix, seq_key, shares_prefix, store_bytes_key, ties_key, user_key, user_prefix,
    users_key,
};
use crate::store::rooms::RoomSet;

/// The arguments of [`ROOM_SET`] for `set`.
fn room_set(inv: &mut ScriptInvocation<'_>, set: &RoomSet) {
    inv.key(room_key(&set.id))
        .arg(set.expected.as_deref().unwrap_or_default())
        .arg(set.after.as_deref().unwrap_or_default())
        .arg(set.id.to_hex())
        .arg(rooms_of_prefix())
        .arg(set.counts.len());
    for (user, count) in &set.counts {
        inv.arg(user.to_hex()).arg(*count);
    }
    inv.arg(set.joined.len());
    for user in &set.joined {
        inv.arg(user.to_hex());
    }
    for user in &set.parted {
        inv.arg(user.to_hex());
    }
}

// Each script reads (and so type-checks) every key it will write before it writes any:
// Redis does not undo the writes a script made before it failed, so a script that could fail
// halfway (a damaged key of the wrong type, a counter that is not a number) would leave half
// a write behind. Once the reads succeeded the writes cannot fail, and each write is all or
// nothing.

/// [`Store::touch`]: KEYS user hash, users set; ARGV key, now. Returns the record before
/// (`last_seen`, packed aliases and `banned`, empty strings when absent).
const TOUCH: &str = r"
local before = redis.call('HMGET', KEYS[1], 'last_seen', 'aliases', 'banned')
redis.call('ZSCORE', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'last_seen', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return {before[1] or '', before[2] or '', before[3] or ''}
";

/// [`Store::claim_alias`]: KEYS aliases hash, user hash, users set; ARGV key, alias as spelled,
/// alias lower-cased, most aliases. Returns 0 Registered, 1 AlreadyYours, 2 Taken, 3 TooMany.
/// A user who claims before ever logging in is created with `last_seen` 0, as the embedded
/// engine does.
const CLAIM: &str = r"
local owner = redis.call('HGET', KEYS[1], ARGV[3])
if owner then
  if owner == ARGV[1] then return 1 end
  return 2
end
local user = redis.call('HMGET', KEYS[2], 'aliases', 'last_seen')
local aliases = {}
if user[1] then aliases = cmsgpack.unpack(user[1]) end
if type(aliases) ~= 'table' then error('damaged aliases in ' .. KEYS[2]) end
if #aliases >= tonumber(ARGV[4]) then return 3 end
redis.call('ZSCORE', KEYS[3], ARGV[1])
table.insert(aliases, ARGV[2])
redis.call('HSET', KEYS[2], 'aliases', cmsgpack.pack(aliases))
if not user[2] then
  redis.call('HSET', KEYS[2], 'last_seen', '0')
  redis.call('ZADD', KEYS[3], 'NX', '0', ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[1])
return 0
";

/// [`Store::assign_alias`]: KEYS aliases hash, users set; ARGV alias lower-cased, alias as
/// spelled, the new holder's key (empty: nobody), the prefix of user hashes. Returns the
/// holder before (empty: nobody). The user hashes are named from the alias's holder, read
/// first like every key written.
const ASSIGN: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
local new = ARGV[3]
if (old or '') == new then return new end
local function aliases_of(hash)
  local packed = redis.call('HGET', hash, 'aliases')
  local list = {}
  if packed then list = cmsgpack.unpack(packed) end
  if type(list) ~= 'table' then error('damaged aliases in ' .. hash) end
  return list
end
local old_list, new_list, new_seen
if old then old_list = aliases_of(ARGV[4] .. old) end
if new ~= '' then
  new_list = aliases_of(ARGV[4] .. new)
  new_seen = redis.call('HGET', ARGV[4] .. new, 'last_seen')
  redis.call('ZSCORE', KEYS[2], new)
end
if old then
  local kept = {}
  for _, a in ipairs(old_list) do
    if string.lower(a) ~= ARGV[1] then table.insert(kept, a) end
  end
  if #kept == 0 then redis.call('HDEL', ARGV[4] .. old, 'aliases')
  else redis.call('HSET', ARGV[4] .. old, 'aliases', cmsgpack.pack(kept)) end
  redis.call('HDEL', KEYS[1], ARGV[1])
end
if new ~= '' then
  table.insert(new_list, ARGV[2])
  redis.call('HSET', ARGV[4] .. new, 'aliases', cmsgpack.pack(new_list))
  if not new_seen then
    redis.call('HSET', ARGV[4] .. new, 'last_seen', '0')
    redis.call('ZADD', KEYS[2], 'NX', '0', new)
  end
  redis.call('HSET', KEYS[1], ARGV[1], new)
end
return old or ''
";

/// [`Store::set_banned`]: KEYS user hash, users set; ARGV key, `1` or `0`. A key never seen
/// is created (`last_seen` 0) when it is blocked.
const BAN: &str = r"
local seen = redis.call('HGET', KEYS[1], 'last_seen')
redis.call('ZSCORE', KEYS[2], ARGV[1])
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'banned', '1')
  if not seen then
    redis.call('HSET', KEYS[1], 'last_seen', '0')
    redis.call('ZADD', KEYS[2], 'NX', '0', ARGV[1])
  end
else
  redis.call('HDEL', KEYS[1], 'banned')
end
return 1
";

/// [`Store::tie`]: KEYS the owner's ties hash; ARGV the other's key, the change (`accept`,
/// `decline`, `block`, `clear`, `admit`), the box's message and stranger limits, `1` if the
/// admission is a Message. The same rule as `store/ties.rs`'s `decide`. Returns the tie before
/// and after, encoded, empty strings for none.
const TIE: &str = r"
local before = redis.call('HGET', KEYS[1], ARGV[1])
local after = before
local kind = ARGV[2]
local function pending_count(tie)
  if string.sub(tie, 1, 1) ~= 'p' then return nil end
  local n = tonumber(string.sub(tie, 2))
  if not n then error('damaged tie in ' .. KEYS[1]) end
  return n
end
if kind == 'accept' then after = 'a'
elseif kind == 'block' then after = 'b'
elseif kind == 'clear' then after = false
elseif kind == 'decline' then
  if not before or pending_count(before) then after = 'd' end
else
  local counted = 0
  if ARGV[5] == '1' then counted = 1 end
  if not before then
    local waiting = 0
    for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
      if pending_count(v) then waiting = waiting + 1 end
    end
    if waiting < tonumber(ARGV[4]) then after = 'p' .. counted end
  else
    local n = pending_count(before)
    if n and not (counted == 1 and n >= tonumber(ARGV[3])) then after = 'p' .. (n + counted) end
  end
end
if after then redis.call('HSET', KEYS[1], ARGV[1], after)
elseif before then redis.call('HDEL', KEYS[1], ARGV[1]) end
return {before or '', after or ''}
";

/// [`Store::set_discoverable`]: KEYS the set of discoverable keys; ARGV the key, `1` or `0`.
const DISCOVERABLE: &str = r"
if ARGV[2] == '1' then redis.call('SADD', KEYS[1], ARGV[1])
else redis.call('SREM', KEYS[1], ARGV[1]) end
return 1
";

/// The compare-and-set of a room change (`store/rooms.rs` decides it): KEYS the room's
/// record; ARGV the record as read (empty: none), the record to write (empty: delete), the
/// room id, the prefix of users' room sets, then the number of counted users and each with
/// its count read, then the number of users who join and their keys, then the keys of those
/// who part. Writes nothing and returns 0 if the record or a count changed since it was
/// read; else returns 1. Every key it writes is read first (a key of the wrong type fails
/// the script before any write).
const ROOM_SET: &str = r"
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
local prefix = ARGV[4]
local i = 5
local n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do
  if redis.call('SCARD', prefix .. ARGV[i]) ~= tonumber(ARGV[i + 1]) then return 0 end
  i = i + 2
end
local joined = {}
local j = tonumber(ARGV[i])
i = i + 1
for _ = 1, j do
  table.insert(joined, ARGV[i])
  i = i + 1
end
local parted = {}
for k = i, #ARGV do table.insert(parted, ARGV[k]) end
for _, u in ipairs(joined) do redis.call('SCARD', prefix .. u) end
for _, u in ipairs(parted) do redis.call('SCARD', prefix .. u) end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
for _, u in ipairs(joined) do redis.call('SADD', prefix .. u, ARGV[3]) end
for _, u in ipairs(parted) do redis.call('SREM', prefix .. u, ARGV[3]) end
return 1
";

/// [`Store::publish_key_packages`]: KEYS the owner's list of KeyPackages; ARGV the most it
/// may hold, then the KeyPackages. Appends while the list is shorter; returns its length.
const PUBLISH: &str = r"
local held = redis.call('LLEN', KEYS[1])
local max = tonumber(ARGV[1])
for i = 2, #ARGV do
  if held >= max then break end
  redis.call('RPUSH', KEYS[1], ARGV[i])
  held = held + 1
end
return held
";

/// [`Store::claim_key_package`]: KEYS the owner's list. Pops the oldest; an empty string
/// when there is none (a KeyPackage is never empty).
const CLAIM_PACKAGE: &str = r"
return redis.call('LPOP', KEYS[1]) or ''
";

/// The Lua helpers the queue scripts share: `count` reads a counter (absent is 0) and fails
/// before any write if it is not a whole number, `field` the same for a field of a hash;
/// `be64` writes a sequence number as 8 bytes, big-endian; `hex` is a sender's key as the
/// shares name it, `sender_of` the sender of a queue member (after its sequence number and
/// time); `put_share` writes a sender's counts (none left: its fields go).
const QUEUE_HELPERS: &str = r"
local function count(key)
  local v = redis.call('GET', key)
  if not v then return 0 end
  if not string.match(v, '^%d+$') then error('damaged counter ' .. key) end
  return tonumber(v)
end
local function field(key, name)
  local v = redis.call('HGET', key, name)
  if not v then return 0 end
  if not string.match(v, '^%d+$') then error('damaged counter ' .. key .. ' ' .. name) end
  return tonumber(v)
end
local function be64(n)
  local b = {}
  for i = 8, 1, -1 do
    b[i] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(b)
end
local function hex(s)
  return (string.gsub(s, '.', function(c) return string.format('%02x', string.byte(c)) end))
end
local function sender_of(member)
  return hex(string.sub(member, 17, 48))
end
local function put_share(key, s, m, b)
  if m <= 0 then
    redis.call('HDEL', key, 'm:' .. s, 'b:' .. s)
  else
    redis.call('HSET', key, 'm:' .. s, string.format('%d', m), 'b:' .. s, string.format('%d', math.max(b, 0)))
  end
end
local function shares_of(key, cache, s)
  if not cache[s] then cache[s] = {field(key, 'm:' .. s), field(key, 'b:' .. s)} end
  return cache[s]
end
";

/// [`Store::enqueue`] and [`Store::enqueue_fitting`]: the rule of `bounds.rs` in Lua. KEYS
/// queue, queue bytes, sequence counter, expiry set, shares, store bytes; ARGV recipient, mode
/// (`none`, `whole` or `fit`), most messages, most bytes, most messages and bytes of one
/// sender, most bytes in the store, then per entry its acceptance time, its sender (hex) and
/// its encoding. Returns the first sequence number and, per entry, 0 0 0 if it was stored or
/// the bound that left it out (1 share, 2 queue, 3 store) and the two counts it found; a
/// refused whole write returns -1, the bound and the counts before the write.
const ENQUEUE: &str = r"
local n = (#ARGV - 7) / 3
local mode = ARGV[2]
local messages = redis.call('ZCARD', KEYS[1])
local bytes = count(KEYS[2])
local next_seq = count(KEYS[3])
redis.call('ZCARD', KEYS[4])
local total = count(KEYS[6])
local lim = {}
for i = 3, 7 do lim[i] = tonumber(ARGV[i]) end
local shares = {}
for i = 1, n do shares_of(KEYS[5], shares, ARGV[6 + 3 * i]) end
local before = {messages, bytes, total}
local before_share = {}
for s, c in pairs(shares) do before_share[s] = {c[1], c[2]} end
local verdict, refused, kept = {}, {}, 0
for i = 1, n do
  local s, size = ARGV[6 + 3 * i], #ARGV[7 + 3 * i]
  local sh = shares[s]
  local v = refused[s]
  if not v and mode ~= 'none' then
    if messages + 1 > lim[3] or bytes + size > lim[4] then v = {2, messages, bytes}
    elseif sh[1] + 1 > lim[5] or sh[2] + size > lim[6] then v = {1, sh[1], sh[2]}
    elseif total + size > lim[7] then v = {3, total, 0} end
  end
  if v and mode == 'whole' then
    if v[1] == 1 then return {-1, 1, before_share[s][1], before_share[s][2]} end
    if v[1] == 2 then return {-1, 2, before[1], before[2]} end
    return {-1, 3, before[3], 0}
  end
  if v then
    refused[s] = v
    verdict[i] = v
  else
    messages, bytes, total = messages + 1, bytes + size, total + size
    sh[1], sh[2] = sh[1] + 1, sh[2] + size
    kept = kept + 1
  end
end
local first = next_seq
if kept > 0 then first = redis.call('INCRBY', KEYS[3], kept) - kept end
local out, seq = {first}, first
for i = 1, n do
  local v = verdict[i] or {0, 0, 0}
  if not verdict[i] then
    local at = string.format('%d', seq)
    redis.call('ZADD', KEYS[1], at, be64(seq) .. ARGV[7 + 3 * i])
    redis.call('ZADD', KEYS[4], ARGV[5 + 3 * i], ARGV[1] .. ':' .. at)
    seq = seq + 1
  end
  table.insert(out, v[1])
  table.insert(out, v[2])
  table.insert(out, v[3])
end
if kept > 0 then
  redis.call('SET', KEYS[2], string.format('%d', bytes))
  redis.call('SET', KEYS[6], string.format('%d', total))
  for s, c in pairs(shares) do put_share(KEYS[5], s, c[1], c[2]) end
end
return out
";

/// [`Store::remove`]: KEYS queue, queue bytes, expiry set, shares, store bytes; ARGV
/// recipient, then the sequence numbers. Returns how many entries were there.
const REMOVE: &str = r"
local present, gone = {}, {}
for i = 2, #ARGV do
  local found = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[i], ARGV[i])
  if #found > 0 then
    for _, m in ipairs(found) do table.insert(gone, m) end
    table.insert(present, ARGV[i])
  end
end
local bytes = count(KEYS[2])
local total = count(KEYS[5])
redis.call('ZCARD', KEYS[3])
local shares, freed = {}, 0
for _, m in ipairs(gone) do
  local sh = shares_of(KEYS[4], shares, sender_of(m))
  sh[1], sh[2] = sh[1] - 1, sh[2] - (#m - 8)
  freed = freed + #m - 8
end
for _, seq in ipairs(present) do
  redis.call('ZREMRANGEBYSCORE', KEYS[1], seq, seq)
  redis.call('ZREM', KEYS[3], ARGV[1] .. ':' .. seq)
end
if #present > 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('DEL', KEYS[2], KEYS[4])
  else
    redis.call('SET', KEYS[2], string.format('%d', math.max(bytes - freed, 0)))
    for s, c in pairs(shares) do put_share(KEYS[4], s, c[1], c[2]) end
  end
  redis.call('SET', KEYS[5], string.format('%d', math.max(total - freed, 0)))
end
return #present
";

/// [`Store::expire`]: KEYS expiry set, store bytes; ARGV the time before which entries go,
/// the queue key prefix, the queue bytes key prefix, the shares key prefix. Returns
/// recipient, member, recipient, member, ...
const EXPIRE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local total = count(KEYS[2])
local out, gone, left, shares = {}, {}, {}, {}
for _, item in ipairs(due) do
  local to, seq = string.match(item, '^(%x+):(%d+)$')
  if to then
    local found = redis.call('ZRANGEBYSCORE', ARGV[2] .. to, seq, seq)
    if #found > 0 then
      local size = #found[1] - 8
      if not left[to] then
        left[to] = count(ARGV[3] .. to)
        shares[to] = {}
      end
      left[to] = left[to] - size
      local sh = shares_of(ARGV[4] .. to, shares[to], sender_of(found[1]))
      sh[1], sh[2] = sh[1] - 1, sh[2] - size
      total = total - size
      table.insert(gone, {to, seq})
      table.insert(out, to)
      table.insert(out, found[1])
    end
  end
end
for _, g in ipairs(gone) do
  redis.call('ZREMRANGEBYSCORE', ARGV[2] .. g[1], g[2], g[2])
end
for to, bytes in pairs(left) do
  if redis.call('EXISTS', ARGV[2] .. to) == 0 then
    redis.call('DEL', ARGV[3] .. to, ARGV[4] .. to)
  else
    redis.call('SET', ARGV[3] .. to, string.format('%d', math.max(bytes, 0)))
    for s, c in pairs(shares[to]) do put_share(ARGV[4] .. to, s, c[1], c[2]) end
  end
end
if #gone > 0 then redis.call('SET', KEYS[2], string.format('%d', math.max(total, 0))) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return out
";

/// Counts every queued entry into the shares and the store's bytes, once: for data written
/// before they were kept (the queue's own counts were kept already). KEYS expiry set, store
/// bytes, the marker that it was done; ARGV the queue key prefix, the shares key prefix.
/// Returns how many entries it counted, -1 if they had been counted before. One script, so
/// that nodes starting together count once and no write lands in the middle; it reads every
/// entry, once, at the first start of a version that keeps these counts.
pub(super) const COUNT_ONCE: &str = r"
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local shares, total, n = {}, 0, 0
for _, item in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local to, seq = string.match(item, '^(%x+):(%d+)$')
  if to then
    local found = redis.call('ZRANGEBYSCORE', ARGV[1] .. to, seq, seq)
    if #found > 0 then
      local size = #found[1] - 8
      local s = sender_of(found[1])
      shares[to] = shares[to] or {}
      local sh = shares[to][s] or {0, 0}
      shares[to][s] = {sh[1] + 1, sh[2] + size}
      total, n = total + size, n + 1
    end
  end
end
for to, per in pairs(shares) do
  redis.call('DEL', ARGV[2] .. to)
  for s, c in pairs(per) do put_share(ARGV[2] .. to, s, c[1], c[2]) end
end
redis.call('SET', KEYS[2], string.format('%d', total))
redis.call('SET', KEYS[3], '1')
return n
";

/// The scripts, each with its source for loading it again (a restarted Redis has forgotten
/// every script, and EVALSHA in a pipeline does not load it by itself).
pub(super) struct Scripts {
    /// [`TOUCH`].
    touch: (Script, String),
    /// [`CLAIM`].
    claim: (Script, String),
    /// [`ASSIGN`].
    assign: (Script, String),
    /// [`BAN`].
    ban: (Script, String),
    /// [`ENQUEUE`].
    enqueue: (Script, String),
    /// [`REMOVE`].
    remove: (Script, String),
    /// [`EXPIRE`].
    expire: (Script, String),
    /// [`TIE`].
    tie: (Script, String),
    /// [`DISCOVERABLE`].
    discoverable: (Script, String),
    /// [`ROOM_SET`].
    room_set: (Script, String),
    /// [`PUBLISH`].
    publish: (Script, String),
    /// [`CLAIM_PACKAGE`].
    claim_package: (Script, String),
}

/// [`COUNT_ONCE`] with the helpers it uses, as one script.
pub(super) fn count_once() -> Script {
    Script::new(&format!("{QUEUE_HELPERS}{COUNT_ONCE}"))
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let s = |code: String| (Script::new(&code), code);
        let queue = |body: &str| s(format!("{QUEUE_HELPERS}{body}"));
        Scripts {
            touch: s(TOUCH.to_string()),
            claim: s(CLAIM.to_string()),
            assign: s(ASSIGN.to_string()),
            ban: s(BAN.to_string()),
            enqueue: queue(ENQUEUE),
            remove: queue(REMOVE),
            expire: queue(EXPIRE),
            tie: s(TIE.to_string()),
            discoverable: s(DISCOVERABLE.to_string()),
            room_set: s(ROOM_SET.to_string()),
            publish: s(PUBLISH.to_string()),
            claim_package: s(CLAIM_PACKAGE.to_string()),
        }
    }

    /// The script that applies `op`.
    pub(super) fn of(&self, op: &Op) -> &(Script, String) {
        match op {
            Op::Touch { .. } => &self.touch,
            Op::Claim { .. } => &self.claim,
            Op::Assign { .. } => &self.assign,
            Op::Ban { .. } => &self.ban,
            Op::Enqueue { .. } => &self.enqueue,
            Op::Remove { .. } => &self.remove,
            Op::Expire { .. } => &self.expire,
            Op::Tie { .. } => &self.tie,
            Op::Discoverable { .. } => &self.discoverable,
            Op::RoomSet(_) => &self.room_set,
            Op::Publish { .. } => &self.publish,
            Op::ClaimPackage { .. } => &self.claim_package,
        }
    }

    /// The call of `op`'s script with its keys and arguments.
    pub(super) fn invocation(&self, op: &Op) -> ScriptInvocation<'_> {
        let (queues, bytes) = (queue_prefix(), bytes_prefix());
        let mut inv = self.of(op).0.prepare_invoke();
        match op {
            Op::RoomSet(set) => room_set(&mut inv, set),
            Op::Publish {
                owner,
                packages,
                max,
            } => {
                inv.key(packages_key(owner)).arg(*max);
                for p in packages {
                    inv.arg(p.as_slice());
                }
            }
            Op::ClaimPackage { owner } => {
                inv.key(packages_key(owner));
            }
            Op::Tie {
                owner,
                other,
                change,
            } => {
                inv.key(ties_key(owner)).arg(other.to_hex());
                match change {
                    TieChange::Accept => inv.arg("accept"),
                    TieChange::Decline => inv.arg("decline"),
                    TieChange::Block => inv.arg("block"),
                    TieChange::Clear => inv.arg("clear"),
                    TieChange::Admit { limits, message } => inv
                        .arg("admit")
                        .arg(limits.messages)
                        .arg(limits.pending)
                        .arg(if *message { "1" } else { "0" }),
                };
            }
            Op::Discoverable { key, on } => {
                inv.key(discoverable_key())
                    .arg(key.to_hex())
                    .arg(if *on { "1" } else { "0" });
            }
            Op::Touch { key, now } => {
                inv.key(user_key(key))
                    .key(users_key())
                    .arg(key.to_hex())
                    .arg(*now);
            }
            Op::Claim {
                key,
                alias,
                max_aliases,
            } => {
                inv.key(aliases_key())
                    .key(user_key(key))
                    .key(users_key())
                    .arg(key.to_hex())
                    .arg(alias.as_str())
                    .arg(alias_key(alias))
                    .arg(*max_aliases);
            }
            Op::Assign { alias, to } => {
                inv.key(aliases_key())
                    .key(users_key())
                    .arg(alias_key(alias))
                    .arg(alias.as_str())
                    .arg(to.map(|k| k.to_hex()).unwrap_or_default())
                    .arg(user_prefix());
            }
            Op::Ban { key, on } => {
                inv.key(user_key(key))
                    .key(users_key())
                    .arg(key.to_hex())
                    .arg(if *on { "1" } else { "0" });
            }
            Op::Enqueue { to, entries, mode } => {
                let hex = to.to_hex();
                inv.key(format!("{queues}{hex}"))
                    .key(format!("{bytes}{hex}"))
                    .key(seq_key())
                    .key(expiry_key())
                    .key(format!("{}{hex}", shares_prefix()))
                    .key(store_bytes_key())
                    .arg(&hex);
                let limits = match mode {
                    Mode::Unbounded => {
                        inv.arg("none");
                        None
                    }
                    Mode::Whole(l) => {
                        inv.arg("whole");
                        Some(*l)
                    }
                    Mode::Fitting(l) => {
                        inv.arg("fit");
                        Some(*l)
                    }
                };
                // Without bounds the script reads none of these.
                let l = limits.unwrap_or(QueueLimits::queue(u64::MAX, u64::MAX));
                inv.arg(l.messages)
                    .arg(l.bytes)
                    .arg(l.share_messages)
                    .arg(l.share_bytes)
                    .arg(l.store_bytes);
                for e in entries {
                    inv.arg(e.at).arg(e.sender.to_hex()).arg(encode_entry(e));
                }
            }
            Op::Remove { to, seqs } => {
                let hex = to.to_hex();
                inv.key(format!("{queues}{hex}"))
                    .key(format!("{bytes}{hex}"))
                    .key(expiry_key())
                    .key(format!("{}{hex}", shares_prefix()))
                    .key(store_bytes_key())
                    .arg(&hex);
                for seq in seqs {
                    inv.arg(*seq);
                }
            }
            Op::Expire { before } => {
                inv.key(expiry_key())
                    .key(store_bytes_key())
                    .arg(*before)
                    .arg(&queues)
                    .arg(&bytes)
                    .arg(shares_prefix());
            }
        }
        inv
    }
}
