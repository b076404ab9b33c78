//! Just enough of RFC 6455 to end a desktop's WebSocket properly.
//!
//! When a desktop container dies mid-stream, Pingora closes the browser's connection without a
//! close frame, and noVNC reports 1006 ("connection failed"). deskgate follows the frames coming
//! from the upstream (headers only; payloads are skipped by length) and, if the upstream ends
//! without having sent a close frame, sends the browser a close frame with 1011 (server error)
//! at the next frame boundary. (1014 "bad gateway" would say it better, but clients such as
//! tungstenite reject it as reserved.)

use crate::telemetry::{metrics, sessions};
use std::sync::Arc;

/// A server-to-client close frame: FIN + opcode 8, no mask, 2-byte payload 1011.
pub const CLOSE_BAD_GATEWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xF3];

/// One upgraded connection's traffic as deskgate accounts for it: bytes each way (metrics and
/// the admin page's session), and the desktop's frames, to close the browser's side properly.
#[derive(Default)]
pub struct Traffic {
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub frames: FrameTracker,
    /// This WebSocket on the admin page.
    pub session: Option<Arc<sessions::Session>>,
}

impl Traffic {
    /// The upgrade succeeded: the WebSocket counts as open and is on the admin page.
    pub fn open(&mut self, session: Arc<sessions::Session>) {
        metrics::WEBSOCKETS_OPEN.inc();
        metrics::WEBSOCKETS_TOTAL.inc();
        self.session = Some(session);
    }

    /// The WebSocket ended. Called before its connection closes: after this, the admin page's
    /// "disconnect" can no longer reach the descriptor (see `SessionRegistry::close`).
    pub fn close(&mut self) {
        if let Some(session) = self.session.take() {
            metrics::WEBSOCKETS_OPEN.dec();
            sessions::SESSIONS.close(session.id);
        }
    }

    /// Bytes from the browser to the desktop.
    pub fn up(&mut self, n: u64, now_ms: u64) {
        self.bytes_up += n;
        metrics::WEBSOCKET_BYTES_UP.inc_by(n);
        if let Some(s) = &self.session {
            s.add_up(n, now_ms);
        }
    }

    /// Bytes from the desktop to the browser.
    pub fn down(&mut self, data: &[u8], now_ms: u64) {
        self.frames.feed(data);
        let n = data.len() as u64;
        self.bytes_down += n;
        metrics::WEBSOCKET_BYTES_DOWN.inc_by(n);
        if let Some(s) = &self.session {
            s.add_down(n, now_ms);
        }
    }

    /// The close frame to send the browser now that the desktop's side ended, unless the
    /// desktop sent one or stopped mid-frame.
    pub fn closing_frame(&mut self) -> Option<&'static [u8]> {
        if !self.frames.needs_close() {
            return None;
        }
        self.frames.saw_close = true;
        self.bytes_down += CLOSE_BAD_GATEWAY.len() as u64;
        Some(&CLOSE_BAD_GATEWAY)
    }
}

#[derive(Default, Debug)]
pub struct FrameTracker {
    /// Header bytes of the frame being read (at most 14).
    header: Vec<u8>,
    /// Payload bytes still to skip.
    remaining: u64,
    /// The upstream sent a close frame.
    pub saw_close: bool,
    /// Bytes made no sense as frames: stop tracking, never inject.
    pub lost: bool,
}

impl FrameTracker {
    pub fn at_boundary(&self) -> bool {
        !self.lost && self.remaining == 0 && self.header.is_empty()
    }

    /// Whether deskgate should send its own close frame now that the upstream ended.
    pub fn needs_close(&self) -> bool {
        !self.saw_close && self.at_boundary()
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.lost {
            if self.remaining > 0 {
                let n = (self.remaining.min(data.len() as u64)) as usize;
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            self.header.push(data[0]);
            data = &data[1..];
            if let Some((len, opcode)) = self.parse_header() {
                if opcode == 0x8 {
                    self.saw_close = true;
                }
                self.remaining = len;
                self.header.clear();
            } else if self.header.len() >= 14 {
                self.lost = true;
            }
        }
    }

    /// (payload length, opcode) once the header is complete.
    fn parse_header(&self) -> Option<(u64, u8)> {
        let h = &self.header;
        if h.len() < 2 {
            return None;
        }
        let opcode = h[0] & 0x0F;
        let masked = h[1] & 0x80 != 0;
        let mask_len = if masked { 4 } else { 0 };
        let (len, ext) = match h[1] & 0x7F {
            126 => {
                if h.len() < 4 {
                    return None;
                }
                (u16::from_be_bytes([h[2], h[3]]) as u64, 2)
            }
            127 => {
                if h.len() < 10 {
                    return None;
                }
                (u64::from_be_bytes(h[2..10].try_into().ok()?), 8)
            }
            n => (n as u64, 0),
        };
        (h.len() >= 2 + ext + mask_len).then_some((len, opcode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_frames_split_anywhere() {
        let mut frames = vec![0x82, 126, 0x01, 0x00];
        frames.extend(std::iter::repeat(7).take(256));
        frames.extend([0x81, 0x02, b'h', b'i']);
        for split in 0..frames.len() {
            let mut t = FrameTracker::default();
            t.feed(&frames[..split]);
            t.feed(&frames[split..]);
            assert!(t.at_boundary() && !t.saw_close, "split at {split}");
        }
        let mut t = FrameTracker::default();
        t.feed(&[0x82, 0x05, 1, 2]);
        assert!(!t.at_boundary());
        t.feed(&CLOSE_BAD_GATEWAY);
        let mut t2 = FrameTracker::default();
        t2.feed(&CLOSE_BAD_GATEWAY);
        assert!(t2.saw_close && !t2.needs_close());
    }
}
