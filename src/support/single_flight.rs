//! A TTL cache where concurrent lookups of one key become one call (the first caller
//! fetches, the others await its answer), each answer kept for its own time. Used for resolver
//! lookups and access decisions. The cache itself is `moka`'s; this module only says how an
//! answer's time to live is chosen and that an answer with none is shared but not kept.

use moka::future::Cache;
use moka::Expiry;
use std::future::Future;
use std::time::{Duration, Instant};

/// Each entry lives as long as the fetch said.
struct TtlFromAnswer;

impl<V> Expiry<String, (V, Duration)> for TtlFromAnswer {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &(V, Duration),
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.1)
    }
}

pub struct SingleFlightCache<V> {
    entries: Cache<String, (V, Duration)>,
}

impl<V: Clone + Send + Sync + 'static> SingleFlightCache<V> {
    pub fn new(max_entries: u64) -> Self {
        SingleFlightCache {
            entries: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(TtlFromAnswer)
                .build(),
        }
    }

    /// `fetch` returns the value and how long to keep it (zero: do not keep, e.g. errors;
    /// callers waiting on that fetch still get it).
    pub async fn get_or_fetch<F, Fut>(&self, key: &str, fetch: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (V, Duration)>,
    {
        let answer = self
            .entries
            .try_get_with_by_ref(key, async {
                let (value, ttl) = fetch().await;
                if ttl.is_zero() {
                    Err(value)
                } else {
                    Ok((value, ttl))
                }
            })
            .await;
        match answer {
            Ok((value, _)) => value,
            Err(unkept) => (*unkept).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

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
