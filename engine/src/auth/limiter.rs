//! Failed-login rate limit per source address, on one core (cores share nothing, so each core
//! counts the logins it reads itself; the kernel spreads one address's connections over the
//! cores, so the broker-wide limit is up to `cores` times the configured one).
//!
//! Fixed windows: the first failure of an address opens a window of `window`; after `limit`
//! failures in it, further CONNECTs from the address are refused until the window ends. IPv6
//! addresses are counted per /64 (one host usually holds a whole /64); IPv4-mapped IPv6
//! addresses count as their IPv4 address.
//!
//! The table holds at most `max_tracked_addresses` addresses; when full, the address whose
//! window started first is forgotten. Time is an argument.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// The limiter's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterSettings {
    /// Failed logins allowed per address within one window; 0 turns the limiter off.
    pub limit: u32,
    /// The window.
    pub window: Duration,
    /// Addresses tracked at once.
    pub max_tracked_addresses: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    start: Instant,
    seq: u64,
    failures: u32,
    refusal_logged: bool,
}

/// What the limiter says about a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on and check the credentials.
    Allow,
    /// Refuse; `first` is true for the first refusal of this window (log it).
    Refuse {
        /// The first refusal of the window.
        first: bool,
    },
}

/// Failed logins per address.
#[derive(Debug)]
pub struct Limiter {
    settings: LimiterSettings,
    entries: HashMap<IpAddr, Entry>,
    /// Window start order, for eviction of the oldest.
    order: BTreeMap<(Instant, u64), IpAddr>,
    next_seq: u64,
}

/// The key an address is counted under.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Limiter {
    /// An empty limiter.
    pub fn new(settings: LimiterSettings) -> Limiter {
        Limiter {
            settings,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// The settings.
    pub fn settings(&self) -> LimiterSettings {
        self.settings
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    fn expired(&self, e: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(e.start) >= self.settings.window
    }

    /// Whether a CONNECT from `ip` may try to log in at `now`.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        if self.settings.limit == 0 {
            return Verdict::Allow;
        }
        let k = key(ip);
        let Some(e) = self.entries.get(&k).copied() else {
            return Verdict::Allow;
        };
        if self.expired(&e, now) {
            self.remove(k);
            return Verdict::Allow;
        }
        if e.failures < self.settings.limit {
            return Verdict::Allow;
        }
        let first = !e.refusal_logged;
        if let Some(e) = self.entries.get_mut(&k) {
            e.refusal_logged = true;
        }
        Verdict::Refuse { first }
    }

    /// Failures counted for `ip` in its window.
    #[cfg(test)]
    pub(crate) fn failures(&self, ip: IpAddr) -> u32 {
        self.entries.get(&key(ip)).map_or(0, |e| e.failures)
    }

    /// Counts a failed login from `ip` at `now`.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.settings.limit == 0 {
            return;
        }
        let k = key(ip);
        if let Some(e) = self.entries.get(&k).copied() {
            if !self.expired(&e, now) {
                if let Some(e) = self.entries.get_mut(&k) {
                    e.failures = e.failures.saturating_add(1);
                }
                return;
            }
            self.remove(k);
        }
        while self.entries.len() >= self.settings.max_tracked_addresses.max(1) {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            k,
            Entry {
                start: now,
                seq,
                failures: 1,
                refusal_logged: false,
            },
        );
        self.order.insert((now, seq), k);
    }

    fn remove(&mut self, k: IpAddr) {
        if let Some(e) = self.entries.remove(&k) {
            self.order.remove(&(e.start, e.seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limit: u32, max: usize) -> Limiter {
        Limiter::new(LimiterSettings {
            limit,
            window: Duration::from_secs(60),
            max_tracked_addresses: max,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_after_the_limit_until_the_window_passes() {
        let mut l = limiter(3, 100);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for i in 0..3 {
            assert_eq!(l.check(a, t0), Verdict::Allow, "attempt {i}");
            l.failed(a, t0 + Duration::from_secs(i));
        }
        assert_eq!(
            l.check(a, t0 + Duration::from_secs(10)),
            Verdict::Refuse { first: true }
        );
        assert_eq!(
            l.check(a, t0 + Duration::from_secs(11)),
            Verdict::Refuse { first: false }
        );
        // Another address is unaffected.
        assert_eq!(l.check(ip("10.0.0.2"), t0), Verdict::Allow);
        // The window is counted from the first failure.
        assert_eq!(
            l.check(a, t0 + Duration::from_secs(59)),
            Verdict::Refuse { first: false }
        );
        assert_eq!(l.check(a, t0 + Duration::from_secs(60)), Verdict::Allow);
        assert_eq!(l.tracked(), 0);
        // A new window starts at the next failure.
        l.failed(a, t0 + Duration::from_secs(61));
        assert_eq!(l.check(a, t0 + Duration::from_secs(62)), Verdict::Allow);
    }

    #[test]
    fn zero_limit_is_off() {
        let mut l = limiter(0, 100);
        let t0 = Instant::now();
        for _ in 0..100 {
            l.failed(ip("10.0.0.1"), t0);
        }
        assert_eq!(l.check(ip("10.0.0.1"), t0), Verdict::Allow);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_oldest() {
        let mut l = limiter(1, 3);
        let t0 = Instant::now();
        for i in 1..=3u8 {
            l.failed(
                IpAddr::from([10, 0, 0, i]),
                t0 + Duration::from_secs(u64::from(i)),
            );
        }
        assert_eq!(l.tracked(), 3);
        l.failed(ip("10.0.0.9"), t0 + Duration::from_secs(5));
        assert_eq!(l.tracked(), 3);
        let later = t0 + Duration::from_secs(6);
        // 10.0.0.1 was the oldest: forgotten.
        assert_eq!(l.check(ip("10.0.0.1"), later), Verdict::Allow);
        for a in ["10.0.0.2", "10.0.0.3", "10.0.0.9"] {
            assert!(
                matches!(l.check(ip(a), later), Verdict::Refuse { .. }),
                "{a}"
            );
        }
        for i in 0..10_000u32 {
            l.failed(IpAddr::from(i.to_be_bytes()), later);
            assert!(l.tracked() <= 3);
        }
        assert_eq!(l.order.len(), l.tracked());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut l = limiter(2, 100);
        let t0 = Instant::now();
        l.failed(ip("2001:db8:1:2::1"), t0);
        l.failed(ip("2001:db8:1:2:ffff::9"), t0);
        assert!(matches!(
            l.check(ip("2001:db8:1:2::77"), t0),
            Verdict::Refuse { .. }
        ));
        assert_eq!(l.check(ip("2001:db8:1:3::1"), t0), Verdict::Allow);
        l.failed(ip("::ffff:10.1.1.1"), t0);
        l.failed(ip("10.1.1.1"), t0);
        assert!(matches!(
            l.check(ip("10.1.1.1"), t0),
            Verdict::Refuse { .. }
        ));
    }
}
