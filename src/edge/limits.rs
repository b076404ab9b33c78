//! Connection limits: how many requests and WebSockets a listener, and one client address,
//! may have open at once. An open desktop is one WebSocket, so this is the number of desktops
//! (plus requests in flight). Over the limit a new request gets 503 and existing desktops keep
//! working. Idle keep-alive connections are not counted; they are bounded by their timeouts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct ConnectionLimits {
    pub per_listener: Option<usize>,
    pub per_client: Option<usize>,
    open: AtomicUsize,
    by_client: Mutex<HashMap<IpAddr, usize>>,
}

/// Held for as long as a request (or WebSocket) is open; releases its slots on drop.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    client: Option<IpAddr>,
}

impl ConnectionLimits {
    pub fn new(per_listener: Option<usize>, per_client: Option<usize>) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            per_listener,
            per_client,
            ..Default::default()
        })
    }

    pub fn is_unlimited(&self) -> bool {
        self.per_listener.is_none() && self.per_client.is_none()
    }

    /// A slot, or None when the listener or this client is at its limit.
    pub fn acquire(self: &Arc<Self>, client: Option<IpAddr>) -> Option<Slot> {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        if self.per_listener.is_some_and(|max| open > max) {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if let (Some(max), Some(ip)) = (self.per_client, client) {
            let mut map = self.by_client.lock().expect("limits lock");
            let n = map.entry(ip).or_default();
            if *n >= max {
                drop(map);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            *n += 1;
        }
        Some(Slot {
            limits: self.clone(),
            client: client.filter(|_| self.per_client.is_some()),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.client {
            let mut map = self.limits.by_client.lock().expect("limits lock");
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn limits_and_release() {
        let l = ConnectionLimits::new(Some(3), Some(2));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = l.acquire(Some(a)).unwrap();
        let _s2 = l.acquire(Some(a)).unwrap();
        assert!(l.acquire(Some(a)).is_none(), "per client");
        let _s3 = l.acquire(Some(b)).unwrap();
        assert!(l.acquire(Some(b)).is_none(), "per listener");
        drop(s1);
        assert!(l.acquire(Some(a)).is_some());
    }
}
