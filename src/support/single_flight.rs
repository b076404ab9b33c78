//! A small TTL cache where concurrent lookups of one key become one call (the first caller
//! fetches, the others await its answer). Used for resolver lookups and access decisions.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

type Slot<V> = Arc<OnceCell<(V, Duration)>>;

pub struct SingleFlightCache<V> {
    entries: Mutex<HashMap<String, (Instant, Slot<V>)>>,
    max_entries: usize,
}

impl<V: Clone> SingleFlightCache<V> {
    pub fn new(max_entries: usize) -> Self {
        SingleFlightCache {
            entries: Mutex::new(HashMap::new()),
            max_entries,
        }
    }

    /// `fetch` returns the value and how long to keep it (zero: do not cache, e.g. errors).
    pub async fn get_or_fetch<F, Fut>(&self, key: &str, fetch: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (V, Duration)>,
    {
        let slot = {
            let mut map = self.entries.lock().expect("cache lock");
            let fresh = map
                .get(key)
                .filter(|(born, slot)| slot.get().is_none_or(|(_, ttl)| born.elapsed() < *ttl));
            match fresh {
                Some((_, slot)) => slot.clone(),
                None => {
                    if map.len() >= self.max_entries {
                        map.retain(|_, (born, slot)| {
                            slot.get().is_none_or(|(_, ttl)| born.elapsed() < *ttl)
                        });
                        if map.len() >= self.max_entries {
                            map.clear();
                        }
                    }
                    let slot: Slot<V> = Arc::new(OnceCell::new());
                    map.insert(key.to_string(), (Instant::now(), slot.clone()));
                    slot
                }
            }
        };
        let (value, ttl) = slot.get_or_init(fetch).await.clone();
        if ttl.is_zero() {
            let mut map = self.entries.lock().expect("cache lock");
            if map.get(key).is_some_and(|(_, s)| Arc::ptr_eq(s, &slot)) {
                map.remove(key);
            }
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_lookups_make_one_call() {
        let cache = Arc::new(SingleFlightCache::<u32>::new(100));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch("alice", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        (7, Duration::from_secs(10))
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn zero_ttl_is_not_kept() {
        let cache = SingleFlightCache::<u32>::new(100);
        assert_eq!(
            cache
                .get_or_fetch("k", || async { (1, Duration::ZERO) })
                .await,
            1
        );
        assert_eq!(
            cache
                .get_or_fetch("k", || async { (2, Duration::ZERO) })
                .await,
            2
        );
    }
}
