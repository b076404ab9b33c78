//! An upgraded connection's own task: where WebSocket bytes flow once the desktop said `101`.
//!
//! After the `101` the request is over as far as HTTP goes. Vendored Pingora (pingora-proxy
//! patch 19) hands both connections here and ends the request, so what an open desktop keeps
//! for hours is its two TLS streams and this struct, not the request's headers, Pingora's
//! per-request future and the channels of its duplex loop. Bytes move through buffers lent per
//! read (pingora-core patch 8), so an idle tunnel holds none.
//!
//! What the request path did per chunk happens here too: bytes and activity are counted
//! (`websocket::Traffic`, the route's clock), the frames are followed both ways so the browser
//! gets a close frame if the desktop dies mid-session (and only then), and `timeouts.upgraded_idle` ends a tunnel that
//! carried nothing either way for that long (cloudflare/pingora#255: never the HTTP read
//! timeout). When the tunnel ends, the admin page's session is closed before the browser's
//! socket (see `SessionRegistry::close`), and the access log gets the WebSocket's line.

use crate::edge::rate_cap::{RateCap, TokenBucket};
use crate::edge::websocket::Traffic;
use crate::telemetry::access_log::PendingEntry;
use crate::telemetry::activity::{now_ms, Toucher};
use crate::telemetry::sessions::Session;
use bytes::BytesMut;
use pingora::protocols::{io_buffers, Stream};
use pingora::proxy::UpgradedStreams;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The most one read takes (Pingora's own body reads take as much).
const READ_LIMIT: usize = 64 * 1024;
/// Reads per direction before the task lets the thread's other connections run.
const READS_PER_POLL: usize = 16;
/// How long the end of a tunnel may wait on a peer (its close frame, TLS close_notify).
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Quiet checks per `upgraded_idle`: a tunnel ends after that many checks in a row saw nothing
/// move, so between `upgraded_idle` and a quarter more after its last byte. Checking a flag
/// on a timer instead of reading the clock per chunk keeps the clock off the message path.
const IDLE_CHECKS: u32 = 4;

/// Everything a tunnel keeps besides its two connections; dropped when it ends.
pub struct TunnelState {
    pub traffic: Traffic,
    pub activity: Toucher,
    /// `timeouts.upgraded_idle`.
    pub idle_limit: Duration,
    /// The upstream's name, for log lines.
    pub upstream: String,
    /// The WebSocket's access log line, when the access log is on.
    pub log: Option<Box<PendingEntry>>,
    /// The connection's place under the listener's limits, held for its life.
    pub slot: Option<crate::edge::limits::Slot>,
    /// Its upstream server's count of open connections (`balance: least_conn`).
    pub in_flight: Option<crate::upstream::balance::InFlight>,
    /// `websocket.max_rate`: the desktop -> browser direction's cap, when the route has one.
    pub max_rate: Option<RateCap>,
}

/// Starts the tunnel on the current runtime (the listener's).
pub fn spawn(streams: UpgradedStreams, state: TunnelState) {
    let mut to_desktop = Pump::default();
    let mut to_browser = Pump::default();
    let mut state = state;
    let now = now_ms();
    if let Some(bytes) = streams.downstream_unread.filter(|b| !b.is_empty()) {
        state.traffic.up(&bytes, now);
        to_desktop.pending = Some(bytes);
    }
    if let Some(bytes) = streams.upstream_unread.filter(|b| !b.is_empty()) {
        state.traffic.down(&bytes, now);
        to_browser.pending = Some(bytes);
    }
    if let Some(session) = &state.traffic.session {
        // For the quality sampler: the desktop's TCP_INFO, and what this pump holds back.
        if let Some(digest) = streams.upstream.get_socket_digest() {
            session.set_desktop_fd(digest.raw_fd());
        }
        to_browser.held = Some(session.clone());
        if let Some(cap) = state.max_rate {
            session.max_rate.store(cap.bytes_per_sec, Ordering::Relaxed);
        }
    }
    to_browser.cap = state.max_rate.map(TokenBucket::new);
    let tunnel = Tunnel {
        browser: streams.downstream,
        desktop: streams.upstream,
        to_desktop,
        to_browser,
        moved: false,
        reason: "closed",
        state,
    };
    tokio::spawn(tunnel.run());
}

#[derive(Clone, Copy, Debug)]
enum Leg {
    Browser,
    Desktop,
}

enum End {
    /// This leg closed its connection; what it sent before was passed on.
    Closed(Leg),
    /// Reading from or writing to this leg failed (`ReadError` or `WriteError`).
    Failed(Leg, &'static str, io::Error),
    /// Nothing moved either way for `upgraded_idle`.
    Idle,
}

struct Tunnel {
    browser: Stream,
    desktop: Stream,
    to_desktop: Pump,
    to_browser: Pump,
    /// Bytes moved since the last idle check.
    moved: bool,
    /// Why it ended, for the access log.
    reason: &'static str,
    state: TunnelState,
}

impl Tunnel {
    async fn run(mut self) {
        // (A zero limit must not spin: it ends a tunnel after a few quiet milliseconds.)
        let check_every = (self.state.idle_limit / IDLE_CHECKS).max(Duration::from_millis(10));
        let check = tokio::time::sleep(check_every);
        tokio::pin!(check);
        let mut quiet_checks = 0;
        let end = loop {
            tokio::select! {
                end = poll_fn(|cx| self.poll_both(cx)) => break end,
                _ = &mut check => {
                    quiet_checks = if std::mem::take(&mut self.moved) { 0 } else { quiet_checks + 1 };
                    if quiet_checks >= IDLE_CHECKS {
                        break End::Idle;
                    }
                    check.as_mut().reset(Instant::now() + check_every);
                }
            }
        };
        self.end(end).await;
    }

    fn poll_both(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        let Tunnel {
            browser,
            desktop,
            to_desktop,
            to_browser,
            moved,
            state,
            ..
        } = self;
        let up = to_desktop.poll(cx, browser, desktop, |bytes| {
            *moved = true;
            let now = now_ms();
            state.traffic.up(bytes, now);
            state.activity.touch(now);
        });
        if let Poll::Ready(result) = up {
            return Poll::Ready(match result {
                Ok(()) => End::Closed(Leg::Browser),
                Err(PumpError::Read(e)) => End::Failed(Leg::Browser, "ReadError", e),
                Err(PumpError::Write(e)) => End::Failed(Leg::Desktop, "WriteError", e),
            });
        }
        let down = to_browser.poll(cx, desktop, browser, |bytes| {
            *moved = true;
            let now = now_ms();
            state.traffic.down(bytes, now);
            state.activity.touch(now);
        });
        match down {
            Poll::Ready(Ok(())) => Poll::Ready(End::Closed(Leg::Desktop)),
            Poll::Ready(Err(PumpError::Read(e))) => {
                Poll::Ready(End::Failed(Leg::Desktop, "ReadError", e))
            }
            Poll::Ready(Err(PumpError::Write(e))) => {
                Poll::Ready(End::Failed(Leg::Browser, "WriteError", e))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    async fn end(&mut self, end: End) {
        let upstream = &self.state.upstream;
        let traffic = &self.state.traffic;
        match &end {
            End::Failed(Leg::Desktop, what, e) => {
                // A desktop stopped under an open session (the hub's idle culler, a restart) is
                // a warning; one that sent its close frame first ended the session properly,
                // whatever its connection did next (often no TLS close_notify), and one that
                // drops the connection after the browser's close may be rejecting that close.
                if traffic.from_desktop.saw_close {
                    log::debug!("desktop {upstream} closed a WebSocket, then its connection");
                } else if traffic.from_browser.saw_close {
                    log::debug!("desktop {upstream} dropped a WebSocket after the browser's close: {what} ({e})");
                } else if traffic.from_browser.broke_protocol {
                    log::info!("desktop {upstream} failed a WebSocket after a frame from the browser that broke RFC 6455: {what} ({e})");
                } else {
                    log::warn!("desktop {upstream} ended an open WebSocket: {what} ({e})");
                }
            }
            // A browser closing its tab (often without close_notify) is routine.
            End::Failed(Leg::Browser, what, e) => {
                log::debug!("browser left {upstream}: {what} ({e})")
            }
            End::Idle => log::info!(
                "WebSocket to {upstream} carried nothing for {:?} (timeouts.upgraded_idle): closed",
                self.state.idle_limit
            ),
            End::Closed(_) => {}
        }
        self.reason = match &end {
            End::Closed(_) => "closed",
            End::Failed(_, what, _) => what,
            End::Idle => "idle",
        };
        let desktop_ended = matches!(
            end,
            End::Closed(Leg::Desktop) | End::Failed(Leg::Desktop, ..)
        );
        let browser = &mut self.browser;
        if let (true, Some(frame)) = (desktop_ended, self.state.traffic.closing_frame()) {
            // Not a bare EOF, which noVNC reports as 1006.
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                browser.write_all(&frame).await?;
                browser.flush().await
            })
            .await;
        }
        // A leg whose read or write failed is gone: a TLS close_notify toward it would only
        // fail again (a broken pipe).
        let browser_gone = matches!(end, End::Failed(Leg::Browser, ..));
        let desktop_gone = matches!(end, End::Failed(Leg::Desktop, ..));
        let (browser, desktop) = (&mut *self.browser, &mut *self.desktop);
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            tokio::join!(
                close_write(browser, browser_gone, "browser", upstream),
                close_write(desktop, desktop_gone, "desktop", upstream)
            )
        })
        .await;
    }
}

/// Ends the writing side of one leg (TLS close_notify, then FIN), unless it is known gone.
/// Instead of Pingora's `Shutdown`, which logs a WARN for every peer that left first.
async fn close_write(
    stream: &mut dyn pingora::protocols::IO,
    gone: bool,
    leg: &str,
    upstream: &str,
) {
    if gone {
        return;
    }
    if let Err(e) = AsyncWriteExt::shutdown(stream).await {
        if crate::telemetry::log_noise::peer_gone(&e) {
            crate::telemetry::log_noise::count_shutdown_to_gone_peer();
        }
        log::debug!("closing the {leg} side of a WebSocket to {upstream}: {e}");
    }
}

impl Drop for Tunnel {
    /// Also runs when the runtime drops the task (the end of a drain).
    fn drop(&mut self) {
        // Before the browser's socket closes (the fields drop after this).
        self.state.traffic.close();
        if let Some(log) = &self.state.log {
            let traffic = &self.state.traffic;
            log.record((traffic.bytes_up, traffic.bytes_down, self.reason));
        }
    }
}

enum PumpError {
    Read(io::Error),
    Write(io::Error),
}

/// One direction: bytes read and not yet all written (a lent buffer), and whether written bytes
/// wait for a flush.
#[derive(Default)]
struct Pump {
    pending: Option<BytesMut>,
    written: usize,
    unflushed: bool,
    /// Where the admin page reads what this pump holds back (desktop -> browser only). Written
    /// only when a write has to wait and when such a buffer is gone, never per message.
    held: Option<Arc<Session>>,
    held_shown: bool,
    /// `websocket.max_rate` (desktop -> browser only): reads wait for its tokens.
    cap: Option<TokenBucket>,
}

impl Pump {
    /// Moves what `from` has to `to`. `Ready(Ok(()))` once `from` ended and everything read was
    /// written and flushed; `Pending` when `from` has nothing now or `to` takes nothing now.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut Stream,
        to: &mut Stream,
        mut seen: impl FnMut(&[u8]),
    ) -> Poll<Result<(), PumpError>> {
        for _ in 0..READS_PER_POLL {
            while let Some(buf) = &self.pending {
                match Pin::new(&mut *to).poll_write(cx, &buf[self.written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(PumpError::Write(io::ErrorKind::WriteZero.into())))
                    }
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        if self.written == buf.len() {
                            io_buffers::give_back(self.pending.take().expect("checked above"));
                            self.written = 0;
                            self.unflushed = true;
                            if self.held_shown {
                                self.show_held(0);
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(PumpError::Write(e))),
                    Poll::Pending => {
                        self.show_held(buf.len() - self.written);
                        return Poll::Pending;
                    }
                }
            }
            let limit = match &mut self.cap {
                None => READ_LIMIT,
                Some(bucket) => match bucket.poll_allowance(cx) {
                    Poll::Ready(allowed) => allowed.min(READ_LIMIT),
                    // Over the cap: leave the desktop's bytes in its socket (it waits on its TCP
                    // window) until the bucket's timer wakes this task.
                    Poll::Pending => {
                        return match self.poll_flush(cx, to) {
                            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                            _ => Poll::Pending,
                        };
                    }
                },
            };
            match io_buffers::poll_read(from, cx, limit) {
                Poll::Ready(Ok(Some(buf))) => {
                    if let Some(bucket) = &mut self.cap {
                        bucket.spend(buf.len());
                    }
                    seen(&buf);
                    self.pending = Some(buf);
                }
                Poll::Ready(Ok(None)) => {
                    return self.poll_flush(cx, to).map_ok(|()| ());
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(PumpError::Read(e))),
                // Nothing more to read now: send what was written (one flush per batch).
                Poll::Pending => {
                    return match self.poll_flush(cx, to) {
                        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                        _ => Poll::Pending,
                    };
                }
            }
        }
        // A busy connection yields after a batch (what it wrote goes out first); it is polled
        // again at once.
        if let Poll::Ready(Err(e)) = self.poll_flush(cx, to) {
            return Poll::Ready(Err(e));
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn show_held(&mut self, bytes: usize) {
        if let Some(session) = &self.held {
            session.held_down.store(bytes as u64, Ordering::Relaxed);
            self.held_shown = bytes > 0;
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>, to: &mut Stream) -> Poll<Result<(), PumpError>> {
        if !self.unflushed {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut *to).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.unflushed = false;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(PumpError::Write(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::rate_cap::RateCap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const MIB: u64 = 1024 * 1024;

    /// A desktop that sends as fast as it can, a browser that takes everything, and a capped
    /// pump between them, on tokio's paused clock: what reaches the browser in 10 s of (virtual)
    /// time is the burst plus 10 s at the rate, and the desktop is held back by its socket, not
    /// by bytes piling up in deskgate.
    #[tokio::test(start_paused = true)]
    async fn a_capped_pump_holds_the_rate_and_buffers_nothing() {
        let (mut desktop, desktop_side) = tokio::io::duplex(64 * 1024);
        let (browser_side, mut browser) = tokio::io::duplex(64 * 1024);
        let (mut from, mut to): (Stream, Stream) = (Box::new(desktop_side), Box::new(browser_side));
        let cap = RateCap {
            bytes_per_sec: 8 * MIB,
            burst: MIB,
        };
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sent_by_desktop = sent.clone();
        tokio::spawn(async move {
            let chunk = vec![0x5a; 16 * 1024];
            while desktop.write_all(&chunk).await.is_ok() {
                sent_by_desktop.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let received_by_browser = received.clone();
        tokio::spawn(async move {
            let mut buf = vec![0; 64 * 1024];
            while let Ok(n) = browser.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                received_by_browser.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let mut pump = Pump {
            cap: Some(TokenBucket::new(cap)),
            ..Pump::default()
        };
        let pumping = poll_fn(|cx| pump.poll(cx, &mut from, &mut to, |_| {}));
        let stopped = tokio::time::timeout(Duration::from_secs(10), pumping).await;
        assert!(stopped.is_err(), "the pump ended early");
        let received = received.load(std::sync::atomic::Ordering::Relaxed);
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        let expected = MIB + 80 * MIB;
        eprintln!(
            "capped at 8 MiB/s, burst 1 MiB: {received} bytes in 10 s (burst + rate: {expected})"
        );
        assert!(received <= expected + 17 * 1024, "{received}");
        // Less than the rate allows only by what the browser's side still holds (one read)
        // and the bucket's last refill.
        assert!(received + 64 * 1024 + 17 * 1024 >= expected, "{received}");
        // What the desktop got rid of beyond that sits in the two pipes (64 KiB each) and the
        // pump's one read: nothing accumulates.
        assert!(
            sent <= received + 3 * 64 * 1024 + 16 * 1024,
            "{sent} sent, {received} received"
        );
    }
}
