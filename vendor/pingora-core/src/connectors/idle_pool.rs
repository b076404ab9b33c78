// deskgate patch 16: idle upstream connections kept without a task per release.
//
// Pingora's pool (pingora-pool) wrapped each released stream in an `Arc<Mutex<_>>`, added it to
// an LRU and a per-key node, created a oneshot and a `Notify`, and spawned a task that read the
// idle socket under a timer until the stream was taken back; taking it woke that task and waited
// for it to give the lock up. For a kept-alive upstream that is a spawn, a timer, three
// allocations and a task switch on every proxied request.
//
// Here a released stream goes into a plain list per key (most recent last, so the warmest
// connection is reused first). Staleness is checked where it matters, when a stream is taken:
// an expired idle deadline drops it, and the caller's non-blocking read (`test_reusable_stream`)
// catches a peer that closed or sent data. One sweeper task per pool, alive only while the pool
// holds connections, drops expired and closed ones once a second, so their descriptors do not
// wait for the next request.

use crate::protocols::Stream;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the sweeper looks at idle connections.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct IdleStream {
    stream: Stream,
    since: Instant,
    deadline: Option<Instant>,
}

impl IdleStream {
    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }
}

#[derive(Default)]
struct Lists {
    by_key: HashMap<u64, Vec<IdleStream>>,
    count: usize,
}

pub(crate) struct IdlePool {
    lists: Mutex<Lists>,
    capacity: usize,
    sweeping: AtomicBool,
    /// The connector's count of idle streams that received data.
    unexpected_data: Arc<AtomicU64>,
}

impl IdlePool {
    pub(crate) fn new(capacity: usize, unexpected_data: Arc<AtomicU64>) -> Arc<Self> {
        Arc::new(IdlePool {
            lists: Mutex::new(Lists::default()),
            capacity,
            sweeping: AtomicBool::new(false),
            unexpected_data,
        })
    }

    /// The most recently released stream under `key` that is within its idle deadline.
    /// Expired ones met on the way are dropped (outside the lock).
    pub(crate) fn take(&self, key: u64) -> Option<Stream> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let found = {
            let mut lists = self.lists.lock();
            let Lists { by_key, count } = &mut *lists;
            let list = by_key.get_mut(&key)?;
            let mut found = None;
            while let Some(idle) = list.pop() {
                *count -= 1;
                if idle.expired(now) {
                    expired.push(idle);
                } else {
                    found = Some(idle.stream);
                    break;
                }
            }
            if list.is_empty() {
                by_key.remove(&key);
            }
            found
        };
        drop(expired);
        found
    }

    /// Keep `stream` for reuse under `key`. At capacity the longest-idle connection is dropped
    /// and returned (with how long it idled) so the caller can report the eviction.
    pub(crate) fn put(
        self: &Arc<Self>,
        key: u64,
        stream: Stream,
        idle_timeout: Option<Duration>,
    ) -> Option<Duration> {
        let now = Instant::now();
        let idle = IdleStream {
            stream,
            since: now,
            deadline: idle_timeout.map(|t| now + t),
        };
        let evicted = {
            let mut lists = self.lists.lock();
            let evicted = if lists.count >= self.capacity {
                lists.pop_oldest()
            } else {
                None
            };
            lists.by_key.entry(key).or_default().push(idle);
            lists.count += 1;
            evicted
        };
        self.ensure_sweeper();
        evicted.map(|old| now.saturating_duration_since(old.since))
    }

    fn ensure_sweeper(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = Arc::downgrade(self);
        pingora_runtime::current_handle().spawn(sweep(pool));
    }

    /// Drop what has expired or has been closed (or written to) by the peer; returns how many
    /// stay.
    fn sweep_once(&self) -> usize {
        let now = Instant::now();
        let mut dropped = Vec::new();
        let mut lists = self.lists.lock();
        let Lists { by_key, count } = &mut *lists;
        by_key.retain(|_, list| {
            let mut i = 0;
            while i < list.len() {
                if list[i].expired(now)
                    || !super::test_reusable_stream(&mut list[i].stream, &self.unexpected_data)
                {
                    dropped.push(list.remove(i));
                    *count -= 1;
                } else {
                    i += 1;
                }
            }
            !list.is_empty()
        });
        let left = *count;
        drop(lists);
        drop(dropped);
        left
    }
}

impl Lists {
    fn pop_oldest(&mut self) -> Option<IdleStream> {
        // The oldest of a key is its first; O(keys), and only when the pool is full.
        let key = *self
            .by_key
            .iter()
            .filter_map(|(k, list)| list.first().map(|idle| (k, idle.since)))
            .min_by_key(|(_, since)| *since)?
            .0;
        let list = self.by_key.get_mut(&key)?;
        let oldest = list.remove(0);
        if list.is_empty() {
            self.by_key.remove(&key);
        }
        self.count -= 1;
        Some(oldest)
    }
}

async fn sweep(pool: Weak<IdlePool>) {
    loop {
        pingora_timeout::sleep(SWEEP_EVERY).await;
        let Some(pool) = pool.upgrade() else { return };
        let left = pool.sweep_once();
        if left == 0 {
            pool.sweeping.store(false, Ordering::Release);
            // A stream put between the count and the store found `sweeping` still true and
            // started nothing: take the job back if so.
            if pool.lists.lock().count == 0 || pool.sweeping.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }
}
