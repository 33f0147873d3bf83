//! Slows down repeated SASL failures from one IP address and counts them.
//!
//! Each failure from an address adds `step` to the delay before the next
//! `<failure/>` goes out (capped at `max`); entries are forgotten after a
//! quiet minute. The map is bounded: when it is full, old entries are pruned.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
const MAX_ENTRIES: usize = 100_000;

/// Per-address failure counter.
#[derive(Debug)]
pub struct AuthThrottle {
    step: Duration,
    max: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthThrottle {
    /// A throttle adding `step` per recent failure, up to `max`.
    pub fn new(step: Duration, max: Duration) -> AuthThrottle {
        AuthThrottle {
            step,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure and returns how long to wait before answering it.
    pub fn failure(&self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        let Ok(mut map) = self.failures.lock() else {
            return self.max;
        };
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, t)| now.duration_since(*t) < WINDOW);
        }
        let e = map.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= WINDOW {
            e.0 = 0;
        }
        e.0 = e.0.saturating_add(1);
        e.1 = now;
        self.step.saturating_mul(e.0).min(self.max)
    }

    /// Recent failures from an address.
    pub fn count(&self, ip: IpAddr) -> u32 {
        let Ok(map) = self.failures.lock() else {
            return 0;
        };
        match map.get(&ip) {
            Some((n, t)) if t.elapsed() < WINDOW => *n,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_per_address_and_is_capped() {
        let t = AuthThrottle::new(Duration::from_millis(100), Duration::from_millis(250));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(t.failure(a), Duration::from_millis(100));
        assert_eq!(t.failure(a), Duration::from_millis(200));
        assert_eq!(t.failure(a), Duration::from_millis(250));
        assert_eq!(t.failure(b), Duration::from_millis(100));
        assert_eq!(t.count(a), 3);
        assert_eq!(t.count("10.0.0.1".parse().unwrap()), 0);
    }
}
