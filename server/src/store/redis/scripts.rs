//! The Redis engine's Lua scripts, one per kind of write, and how each write calls its script.

use ::redis::{Script, ScriptInvocation};
use flexim_protocol::keys::alias_key;

use super::super::entry::encode_entry;
use super::super::writes::Op;
use super::{aliases_key, bytes_prefix, expiry_key, queue_prefix, seq_key, user_key, users_key};

// Each script reads (and so type-checks) every key it will write before it writes any:
// Redis does not undo the writes a script made before it failed, so a script that could fail
// halfway (a damaged key of the wrong type, a counter that is not a number) would leave half
// a write behind. Once the reads succeeded the writes cannot fail, and each write is all or
// nothing.

/// [`Store::touch`]: KEYS user hash, users set; ARGV key, now. Returns the record before
/// (`last_seen` and packed aliases, empty strings when absent).
const TOUCH: &str = r"
local before = redis.call('HMGET', KEYS[1], 'last_seen', 'aliases')
redis.call('ZSCORE', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'last_seen', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return {before[1] or '', before[2] or ''}
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

/// The Lua helpers the queue scripts share: `count` reads a counter (absent is 0) and fails
/// before any write if it is not a whole number; `be64` writes a sequence number as 8 bytes,
/// big-endian.
const QUEUE_HELPERS: &str = r"
local function count(key)
  local v = redis.call('GET', key)
  if not v then return 0 end
  if not string.match(v, '^%d+$') then error('damaged counter ' .. key) end
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
";

/// [`Store::enqueue`]: KEYS queue, queue bytes, sequence counter, expiry set; ARGV recipient,
/// most messages (empty for no limits), most bytes, then per entry its acceptance time and
/// its encoding. Returns {1, first sequence number} or, refused, {0, messages, bytes}.
const ENQUEUE: &str = r"
local n = (#ARGV - 3) / 2
local messages = redis.call('ZCARD', KEYS[1])
local bytes = count(KEYS[2])
local next_seq = count(KEYS[3])
redis.call('ZCARD', KEYS[4])
local added = 0
for i = 1, n do added = added + #ARGV[3 + 2 * i] end
if ARGV[2] ~= '' and (messages + n > tonumber(ARGV[2]) or bytes + added > tonumber(ARGV[3])) then
  return {0, messages, bytes}
end
if n == 0 then return {1, next_seq} end
local first = redis.call('INCRBY', KEYS[3], n) - n
for i = 1, n do
  local seq = string.format('%d', first + i - 1)
  redis.call('ZADD', KEYS[1], seq, be64(first + i - 1) .. ARGV[3 + 2 * i])
  redis.call('ZADD', KEYS[4], ARGV[2 + 2 * i], ARGV[1] .. ':' .. seq)
end
redis.call('INCRBY', KEYS[2], added)
return {1, first}
";

/// [`Store::remove`]: KEYS queue, queue bytes, expiry set; ARGV recipient, then the sequence
/// numbers. Returns how many entries were there.
const REMOVE: &str = r"
local present, freed = {}, 0
for i = 2, #ARGV do
  local found = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[i], ARGV[i])
  if #found > 0 then
    for _, m in ipairs(found) do freed = freed + #m - 8 end
    table.insert(present, ARGV[i])
  end
end
local bytes = count(KEYS[2])
redis.call('ZCARD', KEYS[3])
for _, seq in ipairs(present) do
  redis.call('ZREMRANGEBYSCORE', KEYS[1], seq, seq)
  redis.call('ZREM', KEYS[3], ARGV[1] .. ':' .. seq)
end
if #present > 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('DEL', KEYS[2])
  else
    redis.call('SET', KEYS[2], string.format('%d', math.max(bytes - freed, 0)))
  end
end
return #present
";

/// [`Store::expire`]: KEYS expiry set; ARGV the time before which entries go, the queue key
/// prefix, the queue bytes key prefix. Returns recipient, member, recipient, member, ...
const EXPIRE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local out, gone, freed = {}, {}, {}
for _, item in ipairs(due) do
  local to, seq = string.match(item, '^(%x+):(%d+)$')
  if to then
    local found = redis.call('ZRANGEBYSCORE', ARGV[2] .. to, seq, seq)
    if #found > 0 then
      if not freed[to] then freed[to] = count(ARGV[3] .. to) end
      freed[to] = freed[to] - (#found[1] - 8)
      table.insert(gone, {to, seq})
      table.insert(out, to)
      table.insert(out, found[1])
    end
  end
end
for _, g in ipairs(gone) do
  redis.call('ZREMRANGEBYSCORE', ARGV[2] .. g[1], g[2], g[2])
end
for to, left in pairs(freed) do
  if redis.call('EXISTS', ARGV[2] .. to) == 0 then
    redis.call('DEL', ARGV[3] .. to)
  else
    redis.call('SET', ARGV[3] .. to, string.format('%d', math.max(left, 0)))
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return out
";

/// The scripts, each with its source for loading it again (a restarted Redis has forgotten
/// every script, and EVALSHA in a pipeline does not load it by itself).
pub(super) struct Scripts {
    /// [`TOUCH`].
    touch: (Script, String),
    /// [`CLAIM`].
    claim: (Script, String),
    /// [`ENQUEUE`].
    enqueue: (Script, String),
    /// [`REMOVE`].
    remove: (Script, String),
    /// [`EXPIRE`].
    expire: (Script, String),
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let s = |code: String| (Script::new(&code), code);
        let queue = |body: &str| s(format!("{QUEUE_HELPERS}{body}"));
        Scripts {
            touch: s(TOUCH.to_string()),
            claim: s(CLAIM.to_string()),
            enqueue: queue(ENQUEUE),
            remove: queue(REMOVE),
            expire: queue(EXPIRE),
        }
    }

    /// The script that applies `op`.
    pub(super) fn of(&self, op: &Op) -> &(Script, String) {
        match op {
            Op::Touch { .. } => &self.touch,
            Op::Claim { .. } => &self.claim,
            Op::Enqueue { .. } => &self.enqueue,
            Op::Remove { .. } => &self.remove,
            Op::Expire { .. } => &self.expire,
        }
    }

    /// The call of `op`'s script with its keys and arguments.
    pub(super) fn invocation(&self, op: &Op) -> ScriptInvocation<'_> {
        let (queues, bytes) = (queue_prefix(), bytes_prefix());
        let mut inv = self.of(op).0.prepare_invoke();
        match op {
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
            Op::Enqueue {
                to,
                entries,
                limits,
            } => {
                let hex = to.to_hex();
                inv.key(format!("{queues}{hex}"))
                    .key(format!("{bytes}{hex}"))
                    .key(seq_key())
                    .key(expiry_key())
                    .arg(&hex);
                match limits {
                    Some(l) => inv.arg(l.messages).arg(l.bytes),
                    None => inv.arg("").arg(""),
                };
                for e in entries {
                    inv.arg(e.at).arg(encode_entry(e));
                }
            }
            Op::Remove { to, seqs } => {
                let hex = to.to_hex();
                inv.key(format!("{queues}{hex}"))
                    .key(format!("{bytes}{hex}"))
                    .key(expiry_key())
                    .arg(&hex);
                for seq in seqs {
                    inv.arg(*seq);
                }
            }
            Op::Expire { before } => {
                inv.key(expiry_key()).arg(*before).arg(&queues).arg(&bytes);
            }
        }
        inv
    }
}
