//! Rate limits as token buckets, decided without I/O: the time is passed in, so the rules are
//! tested without clocks and every caller shares them.
//!
//! A [`Rate`] is a setting (so many a second, so many at once); a [`Bucket`] is one sender's
//! state under it; [`Buckets`] keeps one bucket per address or key, in shards, and forgets
//! the buckets that have refilled so that a flood of distinct senders cannot grow it forever.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate limit: `per_second` on average, with bursts of up to `burst`. A rate with
/// `per_second` zero is no limit at all (an operator's way to turn one off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added each second.
    pub per_second: f64,
    /// The most tokens a bucket holds: how many may come at once after a quiet spell.
    pub burst: f64,
}

impl Rate {
    /// `per_second` on average with bursts of `burst`.
    pub const fn new(per_second: f64, burst: f64) -> Rate {
        Rate { per_second, burst }
    }

    /// Whether this rate limits anything.
    pub fn is_on(&self) -> bool {
        self.per_second > 0.0
    }

    /// The rate in words, for refusals: "50 a second, bursts of 200".
    pub fn words(&self) -> String {
        format!("{} a second, bursts of {}", self.per_second, self.burst)
    }
}

/// As the flags take it: `PER_SECOND/BURST`, or `0`.
impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_on() {
            write!(f, "{}/{}", self.per_second, self.burst)
        } else {
            f.write_str("0")
        }
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    /// `RATE/BURST`, e.g. `20/200`, or `0` for no limit.
    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("{s:?} is not a rate: write PER_SECOND/BURST, e.g. 20/200, or 0");
        let (rate, burst) = match s.split_once('/') {
            Some((r, b)) => (r.trim(), b.trim()),
            None if s.trim() == "0" => return Ok(Rate::new(0.0, 0.0)),
            None => return Err(bad()),
        };
        let rate: f64 = rate.parse().map_err(|_| bad())?;
        let burst: f64 = burst.parse().map_err(|_| bad())?;
        if !rate.is_finite() || !burst.is_finite() || rate < 0.0 || burst < 1.0 && rate > 0.0 {
            return Err(bad());
        }
        Ok(Rate::new(rate, burst))
    }
}

/// One sender's tokens under a [`Rate`].
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    /// Tokens left; a fraction is a token partly refilled.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl Bucket {
    /// A full bucket: a new sender may use the whole burst.
    pub fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            at: now,
        }
    }

    /// Brings the tokens up to `now`.
    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = now;
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        if !rate.is_on() {
            return Ok(());
        }
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / rate.per_second,
            ))
        }
    }

    /// Takes one token whether or not one is there, and says how long the sender should
    /// pause until the bucket is out of debt: for a sender that is slowed rather than refused
    /// (its datum has been read already), so that the pauses add up to exactly the rate.
    pub fn charge(&mut self, rate: Rate, now: Instant) -> Option<Duration> {
        if !rate.is_on() {
            return None;
        }
        self.refill(rate, now);
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / rate.per_second))
    }

    /// Whether the bucket is full again at `now` (it then says nothing a new one would not).
    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= rate.burst
    }
}

/// Shards of a [`Buckets`]: senders on different cores rarely meet on one lock.
const SHARDS: usize = 16;

/// How many buckets a shard keeps before it first forgets the full ones: a full bucket is
/// what a new sender would get anyway, so forgetting it changes nothing but the memory.
const PRUNE_AT: usize = 4096;

/// One shard's buckets.
struct Shard<K> {
    /// The buckets, by sender.
    buckets: HashMap<K, Bucket>,
    /// The size at which the full buckets are forgotten next: twice what was kept the last
    /// time (at least [`PRUNE_AT`]), so that a flood of senders whose buckets are not full
    /// costs a sweep per doubling, not one per sender.
    prune_at: usize,
}

/// One bucket per sender (an address, a key) under one [`Rate`].
pub struct Buckets<K> {
    /// The limit every bucket follows.
    rate: Rate,
    /// The buckets, in shards chosen by [`Spread::spread`].
    shards: Box<[Mutex<Shard<K>>]>,
}

/// How a sender picks its shard.
pub trait Spread {
    /// A number spreading senders over the shards.
    fn spread(&self) -> usize;
}

impl Spread for flexim_protocol::PublicKey {
    fn spread(&self) -> usize {
        usize::from(self.0[0])
    }
}

impl Spread for IpAddr {
    fn spread(&self) -> usize {
        match self {
            IpAddr::V4(a) => usize::from(a.octets()[3]),
            IpAddr::V6(a) => usize::from(a.octets()[7]),
        }
    }
}

impl<K: Eq + Hash + Copy + Spread> Buckets<K> {
    /// No buckets yet, all to follow `rate`.
    pub fn new(rate: Rate) -> Self {
        Buckets {
            rate,
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        prune_at: PRUNE_AT,
                    })
                })
                .collect(),
        }
    }

    /// The limit.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one of `who`'s tokens, or says how long until one is there.
    pub fn take(&self, who: K, now: Instant) -> Result<(), Duration> {
        if !self.rate.is_on() {
            return Ok(());
        }
        self.with(who, now, |b, rate| b.take(rate, now))
    }

    /// Takes one of `who`'s tokens even if there is none ([`Bucket::charge`]), and says how
    /// long `who` should pause.
    pub fn charge(&self, who: K, now: Instant) -> Option<Duration> {
        if !self.rate.is_on() {
            return None;
        }
        self.with(who, now, |b, rate| b.charge(rate, now))
    }

    /// Runs `f` on `who`'s bucket, made full if `who` has none.
    fn with<T>(&self, who: K, now: Instant, f: impl FnOnce(&mut Bucket, Rate) -> T) -> T {
        let rate = self.rate;
        let mut shard = self.shards[who.spread() % SHARDS]
            .lock()
            .expect("rate lock");
        if shard.buckets.len() >= shard.prune_at {
            shard.buckets.retain(|_, b| !b.is_full(rate, now));
            shard.prune_at = (shard.buckets.len() * 2).max(PRUNE_AT);
        }
        let bucket = shard
            .buckets
            .entry(who)
            .or_insert_with(|| Bucket::full(rate, now));
        f(bucket, rate)
    }
}

/// The address a per-address limit counts: an IPv4 address, or the /64 network of an IPv6
/// one (one subscriber usually holds a whole /64, so counting single IPv6 addresses would
/// limit nothing).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
        v4 => v4,
    }
}

/// A duration as people read it in a refusal: "0.3 s", "12 s".
pub fn wait_text(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1} s", d.as_secs_f64().max(0.1))
    } else {
        format!("{} s", d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_the_rate() {
        let rate = Rate::new(10.0, 3.0);
        let t0 = Instant::now();
        let mut b = Bucket::full(rate, t0);
        for _ in 0..3 {
            assert_eq!(b.take(rate, t0), Ok(()));
        }
        let wait = b.take(rate, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert_eq!(b.take(rate, t0 + Duration::from_millis(100)), Ok(()));
        assert!(b.take(rate, t0 + Duration::from_millis(100)).is_err());
        // A long quiet spell refills to the burst, not beyond it.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(rate, later), Ok(()));
        }
        assert!(b.take(rate, later).is_err());
    }

    #[test]
    fn charging_pauses_exactly_as_long_as_the_rate_asks() {
        let rate = Rate::new(100.0, 2.0);
        let t0 = Instant::now();
        let mut b = Bucket::full(rate, t0);
        assert_eq!(b.charge(rate, t0), None);
        assert_eq!(b.charge(rate, t0), None);
        // In debt by one token: a pause of one token's time, 10 ms; a second one, 20 ms.
        let pause = b.charge(rate, t0).unwrap();
        assert!((pause.as_secs_f64() - 0.01).abs() < 1e-9, "{pause:?}");
        let pause = b.charge(rate, t0).unwrap();
        assert!((pause.as_secs_f64() - 0.02).abs() < 1e-9, "{pause:?}");
        // After the pauses, the sender is even again and is charged from there.
        let later = t0 + Duration::from_millis(20);
        let pause = b.charge(rate, later).unwrap();
        assert!((pause.as_secs_f64() - 0.01).abs() < 1e-9, "{pause:?}");
    }

    #[test]
    fn a_zero_rate_limits_nothing() {
        let off: Rate = "0".parse().unwrap();
        let buckets = Buckets::new(off);
        let now = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(buckets.take(IpAddr::from([127, 0, 0, 1]), now), Ok(()));
        }
    }

    #[test]
    fn senders_have_their_own_buckets() {
        let buckets = Buckets::new(Rate::new(1.0, 2.0));
        let now = Instant::now();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert!(buckets.take(a, now).is_ok() && buckets.take(a, now).is_ok());
        assert!(buckets.take(a, now).is_err());
        assert!(buckets.take(b, now).is_ok(), "another sender is unaffected");
    }

    #[test]
    fn full_buckets_are_forgotten_when_a_shard_grows() {
        let buckets = Buckets::new(Rate::new(100.0, 1.0));
        let n = (PRUNE_AT * SHARDS * 2) as u32;
        let t0 = Instant::now();
        for i in 0..n {
            let _ = buckets.take(IpAddr::from(i.to_be_bytes()), t0);
        }
        // One second later every bucket has refilled: as new senders come, the shards forget
        // the old ones instead of growing on.
        let t1 = t0 + Duration::from_secs(1);
        for i in n..2 * n {
            let _ = buckets.take(IpAddr::from(i.to_be_bytes()), t1);
        }
        let kept: usize = buckets
            .shards
            .iter()
            .map(|s| s.lock().unwrap().buckets.len())
            .sum();
        assert!(
            kept <= n as usize + PRUNE_AT * SHARDS,
            "{kept} buckets kept"
        );
    }

    #[test]
    fn rates_parse_and_refuse_nonsense() {
        assert_eq!("20/200".parse::<Rate>(), Ok(Rate::new(20.0, 200.0)));
        for r in [
            Rate::new(20.0, 200.0),
            Rate::new(0.5, 3.0),
            Rate::new(0.0, 0.0),
        ] {
            assert_eq!(r.to_string().parse::<Rate>(), Ok(r), "{r}");
        }
        assert_eq!("0.5/10".parse::<Rate>(), Ok(Rate::new(0.5, 10.0)));
        for bad in ["", "20", "x/1", "1/x", "-1/5", "5/0", "inf/1"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_bit_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), IpAddr::from([192, 0, 2, 7]));
    }
}
