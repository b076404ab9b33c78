//! Open WebSocket sessions (desktops in use), for the admin page: which route and desktop,
//! which user and client, since when, bytes each way, last activity; an hour of history of
//! how many were open and how many bytes flowed; and a way to disconnect one.
//!
//! The request path touches this only when an upgrade succeeds (one insert), per chunk (two
//! relaxed atomics) and when the session ends (one remove). Each session also carries its
//! network figures (`telemetry::quality`), which one background task fills.

use crate::telemetry::quality::{Reading, SessionQuality};
use crate::telemetry::tcp_info::LegInfo;
use async_trait::async_trait;
use once_cell::sync::Lazy;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One open WebSocket.
pub struct Session {
    pub id: u64,
    pub route: String,
    pub upstream: String,
    /// The user an access check vouched for (`X-User` sent upstream), when there was one.
    pub user: Option<String>,
    pub client: String,
    pub since_ms: u64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub last_ms: AtomicU64,
    /// The browser's connection, to shut down on "disconnect" and to read its `TCP_INFO`.
    fd: Option<std::os::unix::io::RawFd>,
    /// The desktop's connection, once the tunnel holds it (-1 before): for its `TCP_INFO`.
    desktop_fd: AtomicI32,
    /// Bytes from the desktop deskgate holds because the browser's socket took no more. The
    /// tunnel writes it only when such a write has to wait, so the data path pays nothing.
    pub held_down: AtomicU64,
    /// The cap on the desktop -> browser direction (bytes/s), 0 when there is none.
    pub max_rate: AtomicU64,
    /// Network figures and their recent history (written by the quality sampler only).
    pub quality: Mutex<SessionQuality>,
}

impl Session {
    pub fn add_up(&self, n: u64, now_ms: u64) {
        self.bytes_up.fetch_add(n, Ordering::Relaxed);
        self.last_ms.store(now_ms, Ordering::Relaxed);
    }
    pub fn add_down(&self, n: u64, now_ms: u64) {
        self.bytes_down.fetch_add(n, Ordering::Relaxed);
        self.last_ms.store(now_ms, Ordering::Relaxed);
    }

    /// The tunnel took the desktop's connection: its figures can be read from now on. The
    /// tunnel closes the session (`SessionRegistry::close`) before it closes that connection.
    pub fn set_desktop_fd(&self, fd: std::os::unix::io::RawFd) {
        self.desktop_fd.store(fd, Ordering::Relaxed);
    }
}

/// What a new session is.
pub struct SessionStart {
    pub route: String,
    pub upstream: String,
    pub user: Option<String>,
    pub client: String,
    pub fd: Option<std::os::unix::io::RawFd>,
}

/// One point of history: when, how many sessions were open, bytes moved so far (all sessions).
#[derive(Clone, Copy)]
pub struct Sample {
    pub at_ms: u64,
    pub open: usize,
    pub bytes_total: u64,
}

pub struct SessionRegistry {
    open: Mutex<BTreeMap<u64, Arc<Session>>>,
    next_id: AtomicU64,
    /// Bytes of sessions that have ended, so the history's total never goes backwards.
    closed_bytes: AtomicU64,
    history: Mutex<VecDeque<Sample>>,
}

pub static SESSIONS: Lazy<SessionRegistry> = Lazy::new(|| SessionRegistry {
    open: Mutex::new(BTreeMap::new()),
    next_id: AtomicU64::new(1),
    closed_bytes: AtomicU64::new(0),
    history: Mutex::new(VecDeque::new()),
});

/// History: a sample every 10 s, one hour kept.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const SAMPLES_KEPT: usize = 360;

impl SessionRegistry {
    pub fn open(&self, start: SessionStart) -> Arc<Session> {
        let now = crate::telemetry::activity::now_ms();
        let session = Arc::new(Session {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            route: start.route,
            upstream: start.upstream,
            user: start.user,
            client: start.client,
            since_ms: now,
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            last_ms: AtomicU64::new(now),
            fd: start.fd,
            desktop_fd: AtomicI32::new(-1),
            held_down: AtomicU64::new(0),
            max_rate: AtomicU64::new(0),
            quality: Mutex::new(SessionQuality::default()),
        });
        self.open
            .lock()
            .expect("sessions lock")
            .insert(session.id, session.clone());
        session
    }

    /// Called when the session ends, before its connection is closed: after this, `disconnect`
    /// can no longer reach its file descriptor (which the kernel may then reuse).
    pub fn close(&self, id: u64) {
        if let Some(s) = self.open.lock().expect("sessions lock").remove(&id) {
            let bytes = s.bytes_up.load(Ordering::Relaxed) + s.bytes_down.load(Ordering::Relaxed);
            self.closed_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub fn list(&self) -> Vec<Arc<Session>> {
        self.open
            .lock()
            .expect("sessions lock")
            .values()
            .cloned()
            .collect()
    }

    /// Shuts the browser's connection of session `id` down; its proxy task then ends the
    /// session as if the browser had left. False when no such session is open.
    pub fn disconnect(&self, id: u64) -> bool {
        // The lock is held across shutdown(): `close` (which runs before the descriptor is
        // closed) cannot finish meanwhile, so the descriptor is still this session's.
        let open = self.open.lock().expect("sessions lock");
        let Some(session) = open.get(&id) else {
            return false;
        };
        if let Some(fd) = session.fd {
            // SAFETY: shutdown(2) on a descriptor owned by a live session; it does not close
            // or free anything, it only ends the connection's reads and writes.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        }
        true
    }

    /// Both legs' kernel readings of every open session, taken under the lock: `close` runs
    /// before a session's connections are closed, so the descriptors read here are still its own.
    pub fn read_legs(
        &self,
        read: impl Fn(std::os::unix::io::RawFd) -> std::io::Result<LegInfo>,
    ) -> Vec<(Arc<Session>, Reading)> {
        let open = self.open.lock().expect("sessions lock");
        open.values()
            .map(|s| {
                let desktop_fd = s.desktop_fd.load(Ordering::Relaxed);
                let reading = Reading {
                    browser: s.fd.and_then(|fd| read(fd).ok()),
                    desktop: (desktop_fd >= 0).then(|| read(desktop_fd).ok()).flatten(),
                    held_down: s.held_down.load(Ordering::Relaxed),
                    bytes_up: s.bytes_up.load(Ordering::Relaxed),
                    bytes_down: s.bytes_down.load(Ordering::Relaxed),
                };
                (s.clone(), reading)
            })
            .collect()
    }

    /// The session `id`, when it is open.
    pub fn get(&self, id: u64) -> Option<Arc<Session>> {
        self.open.lock().expect("sessions lock").get(&id).cloned()
    }

    fn sample(&self) -> Sample {
        let open = self.open.lock().expect("sessions lock");
        let live: u64 = open
            .values()
            .map(|s| s.bytes_up.load(Ordering::Relaxed) + s.bytes_down.load(Ordering::Relaxed))
            .sum();
        Sample {
            at_ms: crate::telemetry::activity::now_ms(),
            open: open.len(),
            bytes_total: live + self.closed_bytes.load(Ordering::Relaxed),
        }
    }

    /// The last hour, oldest first, plus a sample for now.
    pub fn history(&self) -> Vec<Sample> {
        let mut h: Vec<Sample> = self
            .history
            .lock()
            .expect("history lock")
            .iter()
            .copied()
            .collect();
        h.push(self.sample());
        h
    }

    fn record(&self) {
        let s = self.sample();
        let mut h = self.history.lock().expect("history lock");
        if h.len() == SAMPLES_KEPT {
            h.pop_front();
        }
        h.push_back(s);
    }
}

/// Records the history every `SAMPLE_EVERY`.
pub struct HistorySampler;

#[async_trait]
impl BackgroundService for HistorySampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => SESSIONS.record(),
            }
        }
    }
}
