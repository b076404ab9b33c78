//! Just enough of RFC 6455 to end a desktop's WebSocket as the two ends ended it.
//!
//! deskgate follows the frames going both ways (headers only; payloads are skipped by length,
//! so a message costs a few comparisons whatever its size) to know who sent a close frame.
//! When a desktop container dies mid-session, with no close frame sent either way, its
//! connection just ends, which noVNC reports as 1006 ("connection failed"). There deskgate
//! speaks for the desktop: at the next frame boundary it sends the browser a close frame with
//! the route's `websocket.close_on_desktop_loss` code (1011, server error, by default; `none`
//! passes the drop on as it happened). (1014 "bad gateway" would say it better, but clients
//! such as tungstenite reject it as reserved.)
//!
//! It never speaks once either end has sent a close frame: after the desktop's, the browser
//! has its answer; after the browser's, a desktop may legitimately answer a close it rejects
//! (an invalid code, a 1-byte payload, a reason that is not UTF-8) by dropping the connection,
//! and the browser must see that drop, not a "server error" the desktop never sent.
//! Nor after a browser frame that RFC 6455 makes its receiver fail the connection for, as far
//! as the header shows it (reserved bits or opcodes, a bad control frame, broken
//! fragmentation): the desktop's drop is then its answer, not a crash. Faults inside payloads
//! (text that is not UTF-8) are not looked for: that would mean reading every byte.

use crate::telemetry::{metrics, sessions};
use std::sync::Arc;

/// A server-to-client close frame: FIN + opcode 8, no mask, 2-byte payload `code`.
pub fn close_frame(code: u16) -> [u8; 4] {
    let [hi, lo] = code.to_be_bytes();
    [0x88, 0x02, hi, lo]
}

/// One upgraded connection's traffic as deskgate accounts for it: bytes each way (metrics and
/// the admin page's session), and the frames each way, to close the browser's side properly.
#[derive(Default)]
pub struct Traffic {
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Frames from the browser (masked): did it send a close frame?
    pub from_browser: FrameTracker,
    /// Frames from the desktop: did it send a close frame, and where do its frames end?
    pub from_desktop: FrameTracker,
    /// The close frame deskgate sends for a desktop lost mid-session (the route's
    /// `websocket.close_on_desktop_loss`); `None`: the browser sees the drop.
    desktop_loss_close: Option<[u8; 4]>,
    /// This WebSocket on the admin page.
    pub session: Option<Arc<sessions::Session>>,
}

impl Traffic {
    /// The upgrade succeeded: the WebSocket counts as open and is on the admin page.
    /// `close_on_desktop_loss`: the route's setting; `deflate`: the `101` agreed on
    /// permessage-deflate (whose frames set RSV1).
    pub fn open(
        &mut self,
        session: Arc<sessions::Session>,
        close_on_desktop_loss: Option<u16>,
        deflate: bool,
    ) {
        metrics::WEBSOCKETS_OPEN.inc();
        metrics::WEBSOCKETS_TOTAL.inc();
        self.session = Some(session);
        self.desktop_loss_close = close_on_desktop_loss.map(close_frame);
        if deflate {
            self.from_browser.rsv_allowed = RSV1;
            self.from_desktop.rsv_allowed = RSV1;
        }
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
    pub fn up(&mut self, data: &[u8], now_ms: u64) {
        self.from_browser.feed(data);
        let n = data.len() as u64;
        self.bytes_up += n;
        metrics::WEBSOCKET_BYTES_UP.inc_by(n);
        if let Some(s) = &self.session {
            s.add_up(n, now_ms);
        }
    }

    /// Bytes from the desktop to the browser.
    pub fn down(&mut self, data: &[u8], now_ms: u64) {
        self.from_desktop.feed(data);
        let n = data.len() as u64;
        self.bytes_down += n;
        metrics::WEBSOCKET_BYTES_DOWN.inc_by(n);
        if let Some(s) = &self.session {
            s.add_down(n, now_ms);
        }
    }

    /// Whether either end sent a close frame: the WebSocket's closing handshake began.
    pub fn closing(&self) -> bool {
        self.from_browser.saw_close || self.from_desktop.saw_close
    }

    /// The close frame to send the browser now that the desktop's side ended: only for a
    /// desktop lost mid-session (no close frame either way, and no frame from the browser that
    /// the desktop had to fail the connection for), at a frame boundary, and when the route
    /// asks for one.
    pub fn closing_frame(&mut self) -> Option<[u8; 4]> {
        let frame = self.desktop_loss_close?;
        // A browser whose frames deskgate lost track of may have sent a close: stay silent.
        // One that broke the protocol was answered as RFC 6455 7.1.7 says: the desktop failed
        // the connection, it did not crash.
        let browser = &self.from_browser;
        let mid_session = !self.closing() && !browser.lost && !browser.broke_protocol;
        if !mid_session || !self.from_desktop.at_boundary() {
            return None;
        }
        self.from_desktop.saw_close = true;
        self.bytes_down += frame.len() as u64;
        Some(frame)
    }
}

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;
/// The first reserved bit, which permessage-deflate (RFC 7692) sets on compressed messages.
const RSV1: u8 = 0x40;

/// Follows one direction's frames by their headers. Once a close frame went by, or the bytes
/// made no sense as frames, it stops looking.
#[derive(Default, Debug)]
pub struct FrameTracker {
    /// Header bytes of a frame split across reads (a fixed buffer: no allocation).
    header: [u8; MAX_HEADER],
    header_len: u8,
    /// Payload bytes still to skip.
    remaining: u64,
    /// A close frame went by.
    pub saw_close: bool,
    /// Bytes made no sense as frames: stop tracking, never inject.
    pub lost: bool,
    /// A frame broke RFC 6455 in a way its receiver must fail the connection for.
    pub broke_protocol: bool,
    /// A fragmented message is under way.
    in_message: bool,
    /// Reserved bits an extension claimed (RSV1 for permessage-deflate).
    rsv_allowed: u8,
}

enum Header {
    /// Not all of it yet.
    Incomplete,
    Complete {
        header_len: usize,
        payload_len: u64,
        /// FIN, RSV1-3 and the opcode.
        first: u8,
    },
    /// A 64-bit length with its top bit set (RFC 6455 5.2: MUST be 0).
    Invalid,
}

impl FrameTracker {
    pub fn at_boundary(&self) -> bool {
        !self.lost && self.remaining == 0 && self.header_len == 0
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.saw_close && !self.lost {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() as u64) as usize;
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let header = if self.header_len == 0 {
                // The common case: the whole header in this read, parsed where it lies.
                parse_header(data)
            } else {
                Header::Incomplete
            };
            match header {
                Header::Complete {
                    header_len,
                    payload_len,
                    first,
                } => {
                    data = &data[header_len..];
                    self.frame(payload_len, first);
                }
                Header::Invalid => self.lost = true,
                Header::Incomplete => data = self.gather(data),
            }
        }
    }

    /// Adds bytes to a header split across reads; returns what follows it.
    fn gather<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let had = self.header_len as usize;
        let take = (MAX_HEADER - had).min(data.len());
        self.header[had..had + take].copy_from_slice(&data[..take]);
        match parse_header(&self.header[..had + take]) {
            Header::Complete {
                header_len,
                payload_len,
                first,
            } => {
                self.header_len = 0;
                self.frame(payload_len, first);
                &data[header_len - had..]
            }
            Header::Invalid => {
                self.lost = true;
                &[]
            }
            Header::Incomplete => {
                self.header_len = (had + take) as u8;
                &data[take..]
            }
        }
    }

    fn frame(&mut self, payload_len: u64, first: u8) {
        self.remaining = payload_len;
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0F;
        // What RFC 6455 (5.2, 5.4, 5.5) makes the receiver fail the connection for, as far as
        // headers tell: reserved bits no extension claimed, reserved opcodes, a control frame
        // fragmented or over 125 bytes, a continuation with no message begun, a new message
        // inside one.
        let reserved_bits = first & 0x70 & !self.rsv_allowed != 0;
        let broken = match opcode {
            0x0 => !self.in_message,
            0x1 | 0x2 => self.in_message,
            0x8..=0xA => !fin || payload_len > 125,
            _ => true,
        };
        if reserved_bits || broken {
            self.broke_protocol = true;
        }
        if opcode < 0x8 {
            self.in_message = !fin;
        }
        if opcode == 0x8 {
            self.saw_close = true;
        }
    }
}

fn parse_header(h: &[u8]) -> Header {
    if h.len() < 2 {
        return Header::Incomplete;
    }
    let mask_len = if h[1] & 0x80 != 0 { 4 } else { 0 };
    let (payload_len, ext) = match h[1] & 0x7F {
        126 if h.len() >= 4 => (u16::from_be_bytes([h[2], h[3]]) as u64, 2),
        127 if h.len() >= 10 => {
            let len = u64::from_be_bytes(h[2..10].try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Header::Invalid;
            }
            (len, 8)
        }
        126 | 127 => return Header::Incomplete,
        n => (n as u64, 0),
    };
    let header_len = 2 + ext + mask_len;
    if h.len() < header_len {
        return Header::Incomplete;
    }
    Header::Complete {
        header_len,
        payload_len,
        first: h[0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, as browsers send them.
    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                f.push(0x80 | 126);
                f.extend((n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend((n as u64).to_be_bytes());
            }
        }
        f.extend(mask);
        f.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        f
    }

    #[test]
    fn follows_frames_split_anywhere() {
        let mut frames = vec![0x82, 126, 0x01, 0x00];
        frames.extend(std::iter::repeat(7).take(256));
        frames.extend([0x81, 0x02, b'h', b'i']);
        frames.extend(masked(0x2, &[9; 70_000]));
        frames.extend(masked(0x9, b"ping"));
        for split in 0..frames.len() {
            let mut t = FrameTracker::default();
            t.feed(&frames[..split]);
            t.feed(&frames[split..]);
            assert!(t.at_boundary() && !t.saw_close, "split at {split}");
        }
        // Byte by byte.
        let mut t = FrameTracker::default();
        for b in &frames {
            t.feed(std::slice::from_ref(b));
        }
        assert!(t.at_boundary() && !t.saw_close);
        let mut t = FrameTracker::default();
        t.feed(&[0x82, 0x05, 1, 2]);
        assert!(!t.at_boundary());
    }

    #[test]
    fn sees_close_frames_both_ways_split_anywhere() {
        // A browser's close with an invalid code (999) after a message.
        let mut frames = masked(0x1, b"hello");
        frames.extend(masked(0x8, &[0x03, 0xE7]));
        for split in 0..=frames.len() {
            let mut t = FrameTracker::default();
            t.feed(&frames[..split]);
            t.feed(&frames[split..]);
            assert!(t.saw_close, "split at {split}");
        }
        let mut t = FrameTracker::default();
        t.feed(&close_frame(1000));
        assert!(t.saw_close);
    }

    #[test]
    fn frames_a_receiver_must_fail_are_noticed() {
        let broke = |frames: &[Vec<u8>], rsv_allowed: u8| {
            let mut t = FrameTracker {
                rsv_allowed,
                ..FrameTracker::default()
            };
            for f in frames {
                t.feed(f);
            }
            t.broke_protocol
        };
        let text = masked(0x1, b"hi");
        let mut first_part = masked(0x1, b"h");
        first_part[0] &= 0x7F; // FIN off
        let mut rsv1 = text.clone();
        rsv1[0] |= RSV1;
        let mut fragmented_ping = masked(0x9, b"p");
        fragmented_ping[0] &= 0x7F;
        // Fine: messages, a fragmented one with a ping inside, RSV1 when deflate was agreed.
        assert!(!broke(&[text.clone(), masked(0xA, b"")], 0));
        assert!(!broke(
            &[first_part.clone(), masked(0x9, b"p"), masked(0x0, b"i")],
            0
        ));
        assert!(!broke(&[rsv1.clone()], RSV1));
        // Broken.
        assert!(broke(&[rsv1], 0), "RSV1 without an extension");
        assert!(broke(&[masked(0x3, b"")], 0), "reserved opcode");
        assert!(broke(&[masked(0xB, b"")], 0), "reserved control opcode");
        assert!(broke(&[masked(0x9, &[0; 126])], 0), "ping over 125 bytes");
        assert!(broke(&[fragmented_ping], 0), "fragmented ping");
        assert!(broke(&[masked(0x0, b"x")], 0), "continuation of nothing");
        assert!(broke(&[first_part, text], 0), "a message inside a message");
    }

    #[test]
    fn an_invalid_length_stops_tracking() {
        let mut t = FrameTracker::default();
        t.feed(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert!(t.lost && !t.at_boundary());
    }

    fn open(code: Option<u16>) -> Traffic {
        Traffic {
            desktop_loss_close: code.map(close_frame),
            ..Traffic::default()
        }
    }

    #[test]
    fn speaks_for_a_desktop_lost_mid_session_only() {
        // Both sides open: the configured code.
        let mut t = open(Some(1011));
        t.up(&masked(0x1, b"hi"), 0);
        t.down(&[0x81, 0x02, b'h', b'i'], 0);
        assert_eq!(t.closing_frame(), Some([0x88, 0x02, 0x03, 0xF3]));
        assert_eq!(t.closing_frame(), None, "once");

        // `none`: never.
        let mut t = open(None);
        assert_eq!(t.closing_frame(), None);

        // After the browser's close (here with an invalid code): never.
        let mut t = open(Some(1011));
        t.up(&masked(0x8, &[0x03, 0xE7]), 0);
        assert_eq!(t.closing_frame(), None);

        // After the desktop's close: never.
        let mut t = open(Some(1011));
        t.down(&close_frame(1000), 0);
        assert_eq!(t.closing_frame(), None);

        // After a frame the desktop had to fail the connection for: its drop is its answer.
        let mut t = open(Some(1011));
        t.up(&masked(0x3, b""), 0);
        assert_eq!(t.closing_frame(), None);

        // Mid-frame: a close frame would land inside the desktop's message.
        let mut t = open(Some(1011));
        t.down(&[0x82, 0x05, 1, 2], 0);
        assert_eq!(t.closing_frame(), None);
    }
}
