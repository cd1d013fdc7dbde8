//! The `memory` backend: a bucket held in this gateway process.
//!
//! Bounds: `max_entries` keys and `max_bytes` bytes of keys plus values. A write that would go
//! past either drops the least recently written keys until it fits; a single key and value
//! larger than `max_bytes` is refused. A value expires `ttl_ms` after it was last written; an
//! expired key reads as absent at once and frees its room when it is overwritten, deleted or
//! evicted. The TTL is the bucket's, so the least recently written key is also the first to
//! expire: evicting in write order drops expired keys first, at O(log n) per key.
//!
//! One mutex guards a bucket; every operation is a few map updates under it, so requests never
//! wait on each other for long, and increments and compare-and-swaps are atomic.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{KvError, LIST_PAGE, Snapshot};
use crate::config::BucketConfig;

/// A bucket in this process.
#[derive(Debug)]
pub struct MemoryBucket {
    max_entries: usize,
    max_bytes: usize,
    ttl: Option<Duration>,
    data: Mutex<Data>,
}

#[derive(Debug, Default)]
struct Data {
    entries: BTreeMap<String, Entry>,
    /// Write sequence → key, oldest first: the eviction order.
    writes: BTreeMap<u64, String>,
    next_write: u64,
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    write: u64,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len()
}

impl Data {
    fn live(&self, key: &str, now: Instant) -> Option<&Entry> {
        self.entries.get(key).filter(|e| e.live(now))
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.writes.remove(&old.write);
            self.bytes -= cost(key, &old.value);
        }
    }
}

impl MemoryBucket {
    /// An empty bucket with `settings`' bounds.
    pub fn new(settings: &BucketConfig) -> Self {
        Self {
            max_entries: settings
                .max_entries
                .unwrap_or(BucketConfig::DEFAULT_MAX_ENTRIES),
            max_bytes: settings
                .max_bytes
                .unwrap_or(BucketConfig::DEFAULT_MAX_BYTES),
            ttl: settings.ttl_ms.map(Duration::from_millis),
            data: Mutex::new(Data::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Data> {
        // The data stays consistent even if a holder panicked: every update is completed or
        // not started before anything that can panic.
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let data = self.lock();
        data.live(key, Instant::now()).map(|e| e.value.clone())
    }

    /// Writes `value` under `key`, evicting as needed.
    pub fn set(&self, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        let mut data = self.lock();
        self.write(&mut data, key, value)
    }

    fn write(&self, data: &mut Data, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        let need = cost(key, &value);
        if need > self.max_bytes {
            return Err(KvError::Refused(format!(
                "key and value of {need} bytes are larger than the bucket's max_bytes ({})",
                self.max_bytes
            )));
        }
        let now = Instant::now();
        data.remove(key);
        let fits =
            |d: &Data| d.entries.len() < self.max_entries && d.bytes + need <= self.max_bytes;
        while !fits(data) {
            let Some((_, oldest)) = data.writes.pop_first() else {
                break;
            };
            if let Some(old) = data.entries.remove(&oldest) {
                data.bytes -= cost(&oldest, &old.value);
            }
        }
        let write = data.next_write;
        data.next_write += 1;
        data.writes.insert(write, key.to_owned());
        data.bytes += need;
        data.entries.insert(
            key.to_owned(),
            Entry {
                value,
                write,
                // Past what `Instant` can hold, a value never expires.
                expires: self.ttl.and_then(|t| now.checked_add(t)),
            },
        );
        Ok(())
    }

    /// Removes `key`.
    pub fn delete(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Keys after `cursor` in byte order, one page, and the cursor of the next page.
    pub fn list_keys(&self, cursor: Option<&str>) -> (Vec<String>, Option<String>) {
        let data = self.lock();
        let now = Instant::now();
        let from = match cursor {
            Some(c) => std::ops::Bound::Excluded(c.to_owned()),
            None => std::ops::Bound::Unbounded,
        };
        let mut keys: Vec<String> = Vec::new();
        let mut more = false;
        for (k, e) in data.entries.range((from, std::ops::Bound::Unbounded)) {
            if !e.live(now) {
                continue;
            }
            if keys.len() == LIST_PAGE {
                more = true;
                break;
            }
            keys.push(k.clone());
        }
        let next = if more { keys.last().cloned() } else { None };
        (keys, next)
    }

    /// Adds `delta` to the decimal number under `key`.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut data = self.lock();
        let current = match data.live(key, Instant::now()) {
            None => 0,
            Some(e) => parse_counter(&e.value)?,
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| KvError::Refused("increment overflows a signed 64-bit number".into()))?;
        self.write(&mut data, key, next.to_string().into_bytes())?;
        Ok(next)
    }

    /// Writes `value` if `key` holds `expected`.
    pub fn swap(&self, key: &str, expected: &Snapshot, value: Vec<u8>) -> Result<bool, KvError> {
        let mut data = self.lock();
        let current = data.live(key, Instant::now()).map(|e| &e.value);
        if current != expected.as_ref() {
            return Ok(false);
        }
        self.write(&mut data, key, value)?;
        Ok(true)
    }

    /// Keys held now, expired ones included until they are purged (for tests of the bounds).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the bucket holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A counter's value: a decimal signed 64-bit number, as Redis keeps `INCRBY` counters.
pub fn parse_counter(value: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| KvError::Refused("the value is not a decimal integer".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(extra: &str) -> MemoryBucket {
        let settings: BucketConfig =
            toml::from_str(&format!("backend = \"memory\"\n{extra}")).expect("valid settings");
        MemoryBucket::new(&settings)
    }

    #[test]
    fn set_get_delete_and_overwrite_keep_the_byte_count() {
        let b = bucket("");
        b.set("a", b"one".to_vec()).unwrap();
        b.set("a", b"three".to_vec()).unwrap();
        assert_eq!(b.get("a").as_deref(), Some(&b"three"[..]));
        assert_eq!(b.lock().bytes, 6);
        b.delete("a");
        assert_eq!(b.get("a"), None);
        assert_eq!(b.lock().bytes, 0);
        assert!(b.is_empty());
    }

    #[test]
    fn max_entries_evicts_the_least_recently_written() {
        let b = bucket("max_entries = 3");
        for k in ["a", "b", "c"] {
            b.set(k, vec![1]).unwrap();
        }
        b.set("a", vec![2]).unwrap(); // `a` is now the newest write
        b.set("d", vec![1]).unwrap();
        assert_eq!(b.get("b"), None, "the oldest write goes");
        for k in ["a", "c", "d"] {
            assert!(b.get(k).is_some(), "{k} stays");
        }
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn max_bytes_evicts_until_the_write_fits_and_refuses_what_never_fits() {
        let b = bucket("max_bytes = 10");
        b.set("a", vec![0; 4]).unwrap(); // 5 bytes
        b.set("b", vec![0; 4]).unwrap(); // 10 bytes
        b.set("c", vec![0; 2]).unwrap(); // needs 3: `a` goes
        assert_eq!(b.get("a"), None);
        assert!(b.get("b").is_some() && b.get("c").is_some());
        assert!(matches!(b.set("d", vec![0; 10]), Err(KvError::Refused(_))));
    }

    #[test]
    fn expired_keys_read_as_absent_and_go_first() {
        let b = bucket("ttl_ms = 1\nmax_entries = 2");
        b.set("a", vec![1]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(b.get("a"), None);
        assert_eq!(
            b.increment("a", 5).unwrap(),
            5,
            "an expired counter starts over"
        );
        let (keys, _) = b.list_keys(None);
        assert_eq!(keys, ["a"]);
    }

    #[test]
    fn increment_counts_and_refuses_non_numbers_and_overflow() {
        let b = bucket("");
        assert_eq!(b.increment("n", 1).unwrap(), 1);
        assert_eq!(b.increment("n", -3).unwrap(), -2);
        assert_eq!(b.get("n").as_deref(), Some(&b"-2"[..]));
        b.set("s", b"text".to_vec()).unwrap();
        assert!(matches!(b.increment("s", 1), Err(KvError::Refused(_))));
        b.set("m", i64::MAX.to_string().into_bytes()).unwrap();
        assert!(matches!(b.increment("m", 1), Err(KvError::Refused(_))));
    }

    #[test]
    fn swap_writes_only_over_the_value_read() {
        let b = bucket("");
        assert!(b.swap("k", &None, b"1".to_vec()).unwrap(), "absent as read");
        assert!(
            !b.swap("k", &None, b"2".to_vec()).unwrap(),
            "no longer absent"
        );
        assert!(b.swap("k", &Some(b"1".to_vec()), b"2".to_vec()).unwrap());
        assert_eq!(b.get("k").as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn list_keys_pages_in_order() {
        let b = bucket("");
        for i in 0..(LIST_PAGE + 5) {
            b.set(&format!("k{i:05}"), vec![]).unwrap();
        }
        let (first, cursor) = b.list_keys(None);
        assert_eq!(first.len(), LIST_PAGE);
        let cursor = cursor.expect("a second page");
        let (second, end) = b.list_keys(Some(&cursor));
        assert_eq!(second.len(), 5);
        assert_eq!(end, None);
        assert_eq!(second[4], format!("k{:05}", LIST_PAGE + 4));
    }
}
