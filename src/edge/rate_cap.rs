//! A fair share of the school's uplink: `websocket: { max_rate, burst }` caps the desktop ->
//! browser direction of one session with a token bucket.
//!
//! The tunnel asks the bucket how much it may read from the desktop before each read, and reads
//! no more; with no tokens it does not read at all until the bucket has refilled (a timer wakes
//! the tunnel). Nothing is buffered: the desktop's own TCP window fills and the desktop waits,
//! so memory stays flat however fast the desktop produces. Without a cap the tunnel holds no
//! bucket and pays one `Option` check per read.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// A configured cap (`websocket.max_rate`, `websocket.burst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateCap {
    /// Bytes per second, long-run.
    pub bytes_per_sec: u64,
    /// Bytes that may go at once after a quiet spell (the bucket's size).
    pub burst: u64,
}

impl RateCap {
    /// The burst when none is configured: an eighth of a second at the rate, at least 64 KiB
    /// (one read).
    pub fn default_burst(bytes_per_sec: u64) -> u64 {
        (bytes_per_sec / 8).max(64 * 1024)
    }
}

/// Tokens are bytes. Starts full.
pub struct TokenBucket {
    cap: RateCap,
    tokens: f64,
    refilled_at: Instant,
    /// Armed while the bucket is too empty to read.
    wait: Option<Pin<Box<Sleep>>>,
}

impl TokenBucket {
    pub fn new(cap: RateCap) -> TokenBucket {
        TokenBucket {
            cap,
            tokens: cap.burst as f64,
            refilled_at: Instant::now(),
            wait: None,
        }
    }

    /// Fewer tokens than this are not worth a read (many tiny reads cost CPU): wait for more.
    fn smallest_read(&self) -> f64 {
        (self.cap.burst as f64).min(16.0 * 1024.0)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.cap.bytes_per_sec as f64).min(self.cap.burst as f64);
        self.refilled_at = now;
    }

    /// How many bytes may be read now; `Pending` (with a timer that wakes `cx`) when too few.
    pub fn poll_allowance(&mut self, cx: &mut Context<'_>) -> Poll<usize> {
        loop {
            self.refill(Instant::now());
            let want = self.smallest_read();
            if self.tokens >= want {
                self.wait = None;
                return Poll::Ready(self.tokens as usize);
            }
            let missing = (want - self.tokens) / self.cap.bytes_per_sec.max(1) as f64;
            // Rounded up to the timer's millisecond, so the wake-up finds enough tokens.
            let at = self.refilled_at + Duration::from_micros((missing * 1e6).ceil() as u64 + 1);
            let sleep = match &mut self.wait {
                Some(sleep) => {
                    sleep.as_mut().reset(at);
                    sleep
                }
                None => self.wait.insert(Box::pin(tokio::time::sleep_until(at))),
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// `n` bytes were read (at most what `poll_allowance` allowed).
    pub fn spend(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    const MIB: u64 = 1024 * 1024;

    /// A reader that takes every byte the bucket allows, for `seconds` of (paused) time.
    async fn greedy(cap: RateCap, seconds: u64) -> u64 {
        let mut bucket = TokenBucket::new(cap);
        let end = Instant::now() + Duration::from_secs(seconds);
        let mut total = 0u64;
        while Instant::now() < end {
            let n = poll_fn(|cx| bucket.poll_allowance(cx)).await.min(64 * 1024);
            bucket.spend(n);
            total += n as u64;
        }
        total
    }

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate_after_the_burst() {
        let cap = RateCap {
            bytes_per_sec: 8 * MIB,
            burst: MIB,
        };
        let total = greedy(cap, 10).await;
        // The burst, then the rate: more only by the last wake-up's read past the end, less
        // only by what was left in the bucket.
        assert!(total <= MIB + 80 * MIB + 17 * 1024, "{total}");
        assert!(total >= MIB + 80 * MIB - 16 * 1024 - 64 * 1024, "{total}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_cap_still_reads_in_useful_pieces() {
        let cap = RateCap {
            bytes_per_sec: 100 * 1024,
            burst: 64 * 1024,
        };
        let mut bucket = TokenBucket::new(cap);
        let first = poll_fn(|cx| bucket.poll_allowance(cx)).await;
        assert_eq!(first, 64 * 1024);
        bucket.spend(first);
        let next = poll_fn(|cx| bucket.poll_allowance(cx)).await;
        assert!(next >= 16 * 1024, "{next}");
        let total = greedy(cap, 20).await;
        // (As above, the last wake-up's read may end a little past 20 s.)
        assert!(total <= 64 * 1024 + 20 * 100 * 1024 + 17 * 1024, "{total}");
        assert!(total >= 20 * 100 * 1024, "{total}");
    }

    #[test]
    fn default_burst() {
        assert_eq!(RateCap::default_burst(8 * MIB), MIB);
        assert_eq!(RateCap::default_burst(100_000), 64 * 1024);
    }
}
