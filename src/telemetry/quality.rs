//! Network quality of each open desktop, on both legs, for the people who support the desktops:
//! "is it the pupil's network, the desktop, or fine?"
//!
//! One background task (`sessions::QualitySampler`) reads, every `QUALITY_EVERY`, the kernel's `TCP_INFO`
//! of both connections of every open WebSocket (`tcp_info::read`: one system call per socket),
//! adds deskgate's own backlog towards the browser, turns that into figures and a verdict, keeps
//! a short history per session, and feeds the Prometheus histograms. The data path pays nothing
//! per message for it: the tunnel only publishes the bytes it holds back when a write to the
//! browser has to wait (see `edge::tunnel`).
//!
//! What the figures mean (docs/operations.md, "Session quality"): RTT, loss and delivery rate of
//! a leg describe the path from deskgate towards that peer, as deskgate's kernel measures it
//! from the peer's acknowledgements. The backlog is what the desktop sent and the browser has
//! not taken yet: bytes deskgate holds plus bytes in the browser socket's queue not yet sent.

use crate::telemetry::tcp_info::LegInfo;
use std::collections::VecDeque;
use std::time::Duration;

/// How often both legs of every session are read.
pub const QUALITY_EVERY: Duration = Duration::from_secs(2);
/// Samples kept per session (two minutes at `QUALITY_EVERY`).
pub const QUALITY_SAMPLES_KEPT: usize = 60;

/// The browser's network is called slow from this smoothed RTT up: noVNC's pointer lags
/// noticeably from about here.
pub const BROWSER_SLOW_RTT_MS: u32 = 150;
/// The desktop sits next to deskgate (same hall, same data centre): a desktop leg this slow
/// means an overloaded desktop host or network.
pub const DESKTOP_SLOW_RTT_MS: u32 = 50;
/// Either leg is called slow from this share of retransmitted segments in one interval
/// (per mille: 2 %), when at least `LOSS_MIN_SEGMENTS` were sent in it.
pub const SLOW_LOSS_PERMILLE: u32 = 20;
pub const LOSS_MIN_SEGMENTS: u32 = 50;
/// The browser is called slow from this backlog up: about a second of a busy desktop's picture
/// waiting for the browser's network.
pub const BROWSER_SLOW_BACKLOG: u64 = 512 * 1024;

/// One leg's figures over one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LegFigures {
    pub rtt_us: u32,
    pub rttvar_us: u32,
    /// Retransmitted / sent data segments in the interval, per mille.
    pub loss_permille: u32,
    /// Data segments sent in the interval.
    pub segments: u32,
    pub delivery_rate: u64,
    pub unacked_bytes: u32,
}

impl LegFigures {
    fn between(before: Option<Sent>, now: &LegInfo) -> LegFigures {
        let (retrans, segments) = match before {
            Some(b) => (
                now.retrans_total.wrapping_sub(b.retrans_total),
                now.data_segs_out.wrapping_sub(b.data_segs_out),
            ),
            None => (now.retrans_total, now.data_segs_out),
        };
        LegFigures {
            rtt_us: now.rtt_us,
            rttvar_us: now.rttvar_us,
            loss_permille: if segments == 0 {
                0
            } else {
                ((retrans as u64 * 1000) / segments as u64).min(1000) as u32
            },
            segments,
            delivery_rate: now.delivery_rate,
            unacked_bytes: now.unacked_bytes,
        }
    }

    fn lossy(&self) -> bool {
        self.segments >= LOSS_MIN_SEGMENTS && self.loss_permille >= SLOW_LOSS_PERMILLE
    }
}

/// What a support person reads first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    BrowserSlow,
    DesktopSlow,
    BothSlow,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [
        Verdict::Fine,
        Verdict::BrowserSlow,
        Verdict::DesktopSlow,
        Verdict::BothSlow,
    ];

    /// For scripts and the metric's label.
    pub fn code(self) -> &'static str {
        match self {
            Verdict::Fine => "fine",
            Verdict::BrowserSlow => "browser_slow",
            Verdict::DesktopSlow => "desktop_slow",
            Verdict::BothSlow => "both_slow",
        }
    }

    /// For people.
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Fine => "fine",
            Verdict::BrowserSlow => "browser's network slow",
            Verdict::DesktopSlow => "desktop slow",
            Verdict::BothSlow => "browser's network and desktop slow",
        }
    }

    /// Which thresholds the figures crossed, in words (empty when fine).
    pub fn reasons(
        browser: &LegFigures,
        desktop: Option<&LegFigures>,
        backlog: u64,
    ) -> Vec<String> {
        let crossed = Crossed::of(browser, desktop, backlog);
        let mut why = Vec::new();
        if crossed.browser_rtt {
            why.push(format!(
                "browser RTT {} ms >= {BROWSER_SLOW_RTT_MS} ms",
                browser.rtt_us / 1000
            ));
        }
        if crossed.browser_loss {
            why.push(format!(
                "{:.1} % of segments to the browser sent again",
                browser.loss_permille as f64 / 10.0
            ));
        }
        if crossed.backlog {
            why.push(format!("{} KiB waiting for the browser", backlog / 1024));
        }
        if let Some(d) = desktop {
            if crossed.desktop_rtt {
                why.push(format!(
                    "desktop RTT {} ms >= {DESKTOP_SLOW_RTT_MS} ms",
                    d.rtt_us / 1000
                ));
            }
            if crossed.desktop_loss {
                why.push(format!(
                    "{:.1} % of segments to the desktop sent again",
                    d.loss_permille as f64 / 10.0
                ));
            }
        }
        why
    }

    pub fn judge(browser: &LegFigures, desktop: Option<&LegFigures>, backlog: u64) -> Verdict {
        let crossed = Crossed::of(browser, desktop, backlog);
        let browser_slow = crossed.browser_rtt || crossed.browser_loss || crossed.backlog;
        let desktop_slow = crossed.desktop_rtt || crossed.desktop_loss;
        match (browser_slow, desktop_slow) {
            (false, false) => Verdict::Fine,
            (true, false) => Verdict::BrowserSlow,
            (false, true) => Verdict::DesktopSlow,
            (true, true) => Verdict::BothSlow,
        }
    }
}

/// The thresholds one sample crosses: the verdict and its reasons in words both read these, so
/// the thresholds are compared in one place.
struct Crossed {
    browser_rtt: bool,
    browser_loss: bool,
    backlog: bool,
    desktop_rtt: bool,
    desktop_loss: bool,
}

impl Crossed {
    fn of(browser: &LegFigures, desktop: Option<&LegFigures>, backlog: u64) -> Crossed {
        Crossed {
            browser_rtt: browser.rtt_us >= BROWSER_SLOW_RTT_MS * 1000,
            browser_loss: browser.lossy(),
            backlog: backlog >= BROWSER_SLOW_BACKLOG,
            desktop_rtt: desktop.is_some_and(|d| d.rtt_us >= DESKTOP_SLOW_RTT_MS * 1000),
            desktop_loss: desktop.is_some_and(LegFigures::lossy),
        }
    }
}

/// One session's figures at one time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QualitySample {
    pub at_ms: u64,
    pub browser: LegFigures,
    /// None until the tunnel has the desktop's connection (or when it is no TCP socket).
    pub desktop: Option<LegFigures>,
    /// Bytes from the desktop the browser has not taken yet (deskgate's + its socket's queue).
    pub backlog_bytes: u64,
    /// Desktop -> browser over the interval (bytes/s).
    pub rate_down: u64,
    pub verdict: Verdict,
}

/// One point of a session's history, small (20 bytes): a busy session keeps 60 of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryPoint {
    /// Unix time (s).
    pub at_s: u32,
    /// Browser RTT in units of 100 µs (at most 6.5 s).
    pub browser_rtt: u16,
    /// Desktop RTT in units of 100 µs; `u16::MAX` when unknown.
    pub desktop_rtt: u16,
    pub backlog_kib: u32,
    pub rate_down_kib: u32,
    pub verdict: Verdict,
}

impl HistoryPoint {
    fn of(q: &QualitySample) -> HistoryPoint {
        let tenths = |us: u32| (us / 100).min(u16::MAX as u32 - 1) as u16;
        HistoryPoint {
            at_s: (q.at_ms / 1000) as u32,
            browser_rtt: tenths(q.browser.rtt_us),
            desktop_rtt: q.desktop.map_or(u16::MAX, |d| tenths(d.rtt_us)),
            backlog_kib: (q.backlog_bytes / 1024).min(u32::MAX as u64) as u32,
            rate_down_kib: (q.rate_down / 1024).min(u32::MAX as u64) as u32,
            verdict: q.verdict,
        }
    }

    pub fn browser_rtt_ms(&self) -> f64 {
        self.browser_rtt as f64 / 10.0
    }

    pub fn desktop_rtt_ms(&self) -> Option<f64> {
        (self.desktop_rtt != u16::MAX).then(|| self.desktop_rtt as f64 / 10.0)
    }
}

/// A leg's counters the next reading's loss is computed from.
#[derive(Clone, Copy, Default)]
struct Sent {
    retrans_total: u32,
    data_segs_out: u32,
}

impl From<&LegInfo> for Sent {
    fn from(l: &LegInfo) -> Sent {
        Sent {
            retrans_total: l.retrans_total,
            data_segs_out: l.data_segs_out,
        }
    }
}

/// What the sampler keeps per session; only the sampler writes it.
#[derive(Default)]
pub struct SessionQuality {
    last_browser: Option<Sent>,
    last_desktop: Option<Sent>,
    last_bytes_down: u64,
    last_bytes_up: u64,
    last_at_ms: u64,
    pub latest: Option<QualitySample>,
    /// Oldest first. Only intervals in which bytes moved are added: an idle desktop keeps one
    /// point, not sixty copies of it.
    pub history: VecDeque<HistoryPoint>,
}

/// The two legs' kernel readings of one session, plus what the session counted.
pub struct Reading {
    pub browser: Option<LegInfo>,
    pub desktop: Option<LegInfo>,
    pub held_down: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl SessionQuality {
    /// Turns a reading into a sample, keeps it, and returns it (None without a browser socket).
    pub fn record(&mut self, r: &Reading, now_ms: u64) -> Option<QualitySample> {
        let browser_now = r.browser?;
        let browser = LegFigures::between(self.last_browser, &browser_now);
        let desktop = r
            .desktop
            .as_ref()
            .map(|d| LegFigures::between(self.last_desktop, d));
        let backlog_bytes = r.held_down + browser_now.notsent_bytes as u64;
        let elapsed = now_ms.saturating_sub(self.last_at_ms);
        let rate_down = if self.last_at_ms == 0 || elapsed == 0 {
            0
        } else {
            r.bytes_down.saturating_sub(self.last_bytes_down) * 1000 / elapsed
        };
        let sample = QualitySample {
            at_ms: now_ms,
            browser,
            desktop,
            backlog_bytes,
            rate_down,
            verdict: Verdict::judge(&browser, desktop.as_ref(), backlog_bytes),
        };
        let moved = self.latest.is_none()
            || r.bytes_down != self.last_bytes_down
            || r.bytes_up != self.last_bytes_up;
        self.last_browser = Some(Sent::from(&browser_now));
        self.last_desktop = r.desktop.as_ref().map(Sent::from);
        self.last_bytes_down = r.bytes_down;
        self.last_bytes_up = r.bytes_up;
        self.last_at_ms = now_ms;
        self.latest = Some(sample);
        if moved {
            if self.history.len() == QUALITY_SAMPLES_KEPT {
                self.history.pop_front();
            }
            self.history.push_back(HistoryPoint::of(&sample));
        }
        Some(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(rtt_ms: u32, retrans: u32, segs: u32) -> LegInfo {
        LegInfo {
            rtt_us: rtt_ms * 1000,
            retrans_total: retrans,
            data_segs_out: segs,
            ..LegInfo::default()
        }
    }

    fn reading(browser: LegInfo, desktop: LegInfo, bytes_down: u64) -> Reading {
        Reading {
            browser: Some(browser),
            desktop: Some(desktop),
            held_down: 0,
            bytes_up: 0,
            bytes_down,
        }
    }

    #[test]
    fn verdict_follows_the_slow_leg() {
        let mut q = SessionQuality::default();
        let s = q
            .record(&reading(leg(20, 0, 100), leg(1, 0, 100), 0), 1_000)
            .unwrap();
        assert_eq!(s.verdict, Verdict::Fine);
        let s = q
            .record(&reading(leg(400, 0, 200), leg(1, 0, 200), 0), 3_000)
            .unwrap();
        assert_eq!(s.verdict, Verdict::BrowserSlow);
        assert_eq!(s.verdict.text(), "browser's network slow");
        let s = q
            .record(&reading(leg(20, 0, 300), leg(80, 0, 300), 0), 5_000)
            .unwrap();
        assert_eq!(s.verdict, Verdict::DesktopSlow);
        assert_eq!(
            Verdict::reasons(&s.browser, s.desktop.as_ref(), s.backlog_bytes),
            ["desktop RTT 80 ms >= 50 ms"]
        );
    }

    #[test]
    fn loss_counts_only_the_interval_and_enough_segments() {
        let mut q = SessionQuality::default();
        // 30 retransmits long ago, none since: fine.
        q.record(&reading(leg(10, 30, 1000), leg(1, 0, 10), 0), 1_000);
        let s = q
            .record(&reading(leg(10, 30, 2000), leg(1, 0, 20), 0), 3_000)
            .unwrap();
        assert_eq!((s.browser.loss_permille, s.verdict), (0, Verdict::Fine));
        // 50 of 1000 in this interval: 5 %.
        let s = q
            .record(&reading(leg(10, 80, 3000), leg(1, 0, 30), 0), 5_000)
            .unwrap();
        assert_eq!(
            (s.browser.loss_permille, s.verdict),
            (50, Verdict::BrowserSlow)
        );
        // 2 of 10 segments: too few to say anything.
        let s = q
            .record(&reading(leg(10, 82, 3010), leg(1, 0, 40), 0), 7_000)
            .unwrap();
        assert_eq!(s.verdict, Verdict::Fine);
    }

    #[test]
    fn backlog_and_rate() {
        let mut q = SessionQuality::default();
        let mut b = leg(10, 0, 10);
        q.record(&reading(b, leg(1, 0, 1), 0), 1_000);
        b.notsent_bytes = 100_000;
        let mut r = reading(b, leg(1, 0, 1), 4_000_000);
        r.held_down = 64 * 1024;
        let s = q.record(&r, 3_000).unwrap();
        assert_eq!(s.backlog_bytes, 100_000 + 64 * 1024);
        assert_eq!(s.rate_down, 2_000_000);
        b.notsent_bytes = 600_000;
        let s = q
            .record(&reading(b, leg(1, 0, 1), 4_000_000), 5_000)
            .unwrap();
        assert_eq!(s.verdict, Verdict::BrowserSlow);
    }

    #[test]
    fn history_is_bounded_and_skips_idle_intervals() {
        let mut q = SessionQuality::default();
        for i in 0..100 {
            q.record(
                &reading(leg(10, 0, i), leg(1, 0, i), i as u64),
                1_000 * (1 + i as u64),
            );
        }
        assert_eq!(q.history.len(), QUALITY_SAMPLES_KEPT);
        q.record(&reading(leg(10, 0, 100), leg(1, 0, 100), 99), 500_000);
        let last = q.history.back().unwrap();
        assert_eq!(
            (last.at_s, last.browser_rtt_ms(), last.desktop_rtt_ms()),
            (100, 10.0, Some(1.0))
        );
        assert_eq!(q.latest.unwrap().at_ms, 500_000);
        assert_eq!(std::mem::size_of::<HistoryPoint>(), 20);
    }

    #[test]
    fn without_a_browser_socket_there_is_no_sample() {
        let mut q = SessionQuality::default();
        let r = Reading {
            browser: None,
            desktop: None,
            held_down: 0,
            bytes_up: 0,
            bytes_down: 0,
        };
        assert!(q.record(&r, 1).is_none());
    }
}
