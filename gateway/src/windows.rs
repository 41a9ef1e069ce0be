//! Events counted per key in fixed windows (a member's connections, an
//! address's wrong join codes): a key's window starts at its first event and
//! its count starts afresh once the window has passed. Ended windows are pruned
//! when the map reaches `max_keys`, so memory stays bounded whoever sends.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Windows<K> {
    window: Duration,
    max_keys: usize,
    by_key: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K: Hash + Eq> Windows<K> {
    pub fn new(window: Duration, max_keys: usize) -> Self {
        Self {
            window,
            max_keys,
            by_key: Mutex::new(HashMap::new()),
        }
    }

    /// `key`'s events in its current window, and when that window ends.
    pub fn count(&self, key: &K, now: Instant) -> Option<(u32, Instant)> {
        let by_key = self.lock();
        let &(since, count) = by_key.get(key)?;
        let ends = since + self.window;
        (now < ends).then_some((count, ends))
    }

    /// Counts one event of `key` unless its window already holds `limit`;
    /// whether it was counted.
    pub fn add_below(&self, key: K, limit: u32, now: Instant) -> bool {
        self.add(key, limit, now).is_ok()
    }

    /// Counts one event of `key` unless its window already holds `limit`: the
    /// window's count with it, or when the full window ends.
    pub fn add(&self, key: K, limit: u32, now: Instant) -> Result<u32, Instant> {
        let mut by_key = self.lock();
        if by_key.len() >= self.max_keys {
            let window = self.window;
            by_key.retain(|_, (since, _)| now.duration_since(*since) < window);
        }
        let entry = by_key.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= limit {
            return Err(entry.0 + self.window);
        }
        entry.1 += 1;
        Ok(entry.1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, u32)>> {
        // Nothing is left half-done while the lock is held.
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_holds_its_limit_then_starts_afresh() {
        let w = Windows::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert_eq!(w.add("a", 2, t0), Ok(1));
        assert!(w.add_below("a", 2, t0));
        assert_eq!(
            w.add("a", 2, t0),
            Err(t0 + Duration::from_secs(10)),
            "the limit, and when it lifts"
        );
        assert_eq!(w.count(&"a", t0), Some((2, t0 + Duration::from_secs(10))));
        assert!(w.add_below("b", 2, t0), "another key");
        let later = t0 + Duration::from_secs(10);
        assert_eq!(w.count(&"a", later), None, "the window has passed");
        assert!(
            w.add_below("c", 2, later),
            "a full map prunes ended windows"
        );
        assert!(w.add_below("a", 2, later), "counted afresh");
    }
}
