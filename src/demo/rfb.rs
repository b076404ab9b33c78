//! A tiny VNC (RFB 3.8) server behind the demo desktop's WebSocket, so noVNC shows a live
//! desktop: security type None, raw encoding, a 320x200 picture with a clock and a moving
//! square, sent at most five times a second when noVNC asks for updates.
//!
//! Only what noVNC sends without extensions is understood: SetPixelFormat, SetEncodings,
//! FramebufferUpdateRequest, KeyEvent, PointerEvent, ClientCutText. No pseudo-encodings are
//! announced, so noVNC asks for nothing else.

use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub const WIDTH: u16 = 320;
pub const HEIGHT: u16 = 200;
const FRAME_INTERVAL: Duration = Duration::from_millis(200);

/// How the client wants pixels: bytes per pixel, byte order and channel shifts (true colour).
#[derive(Clone, Copy)]
struct PixelFormat {
    bytes: usize,
    big_endian: bool,
    shifts: [u8; 3],
    maxes: [u16; 3],
}

impl PixelFormat {
    /// The server's own: 32 bpp, depth 24, little-endian, red in bits 16-23.
    const SERVER: PixelFormat = PixelFormat {
        bytes: 4,
        big_endian: false,
        shifts: [16, 8, 0],
        maxes: [255, 255, 255],
    };

    fn wire(&self) -> [u8; 16] {
        let mut f = [0u8; 16];
        f[0] = (self.bytes * 8) as u8;
        f[1] = 24;
        f[2] = u8::from(self.big_endian);
        f[3] = 1;
        f[4..6].copy_from_slice(&self.maxes[0].to_be_bytes());
        f[6..8].copy_from_slice(&self.maxes[1].to_be_bytes());
        f[8..10].copy_from_slice(&self.maxes[2].to_be_bytes());
        f[10..13].copy_from_slice(&self.shifts);
        f
    }

    fn parse(f: &[u8]) -> Option<PixelFormat> {
        let bytes = usize::from(f[0] / 8);
        if !matches!(bytes, 1 | 2 | 4) || f[3] == 0 {
            return None; // colour maps are not offered
        }
        let max = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
        Some(PixelFormat {
            bytes,
            big_endian: f[2] != 0,
            shifts: [f[10], f[11], f[12]],
            maxes: [max(4), max(6), max(8)],
        })
    }

    fn put(&self, out: &mut Vec<u8>, [r, g, b]: [u8; 3]) {
        let scale = |v: u8, max: u16| u32::from(v) * u32::from(max) / 255;
        let v = scale(r, self.maxes[0]) << self.shifts[0]
            | scale(g, self.maxes[1]) << self.shifts[1]
            | scale(b, self.maxes[2]) << self.shifts[2];
        let all = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        if self.big_endian {
            out.extend_from_slice(&all[4 - self.bytes..]);
        } else {
            out.extend_from_slice(&all[..self.bytes]);
        }
    }
}

/// 3x5 digits (and a colon), one row per byte, bit 2 = left column.
const DIGITS: [[u8; 5]; 11] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
    [0, 2, 0, 2, 0],
];

/// The picture at `t` seconds since the session began: a gradient, the wall clock (UTC) in
/// large digits, a square bouncing along the bottom.
fn paint(t: f64, name: &str) -> Vec<[u8; 3]> {
    let (w, h) = (usize::from(WIDTH), usize::from(HEIGHT));
    let mut px: Vec<[u8; 3]> = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            [
                20 + (y * 40 / h) as u8,
                40 + (x * 60 / w) as u8,
                110 + (y * 80 / h) as u8,
            ]
        })
        .collect();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (hh, mm, ss) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let glyphs = [hh / 10, hh % 10, 10, mm / 10, mm % 10, 10, ss / 10, ss % 10];
    let scale = 8;
    let mut x0 = 28;
    for g in glyphs {
        for (row, bits) in DIGITS[g as usize].iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let (x, y) = (x0 + col * scale + dx, 40 + row * scale + dy);
                            px[y * w + x] = [250, 250, 250];
                        }
                    }
                }
            }
        }
        x0 += 4 * scale + 2;
    }
    // The name as a coloured bar under the clock, so two desktops look different.
    let hue = name
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    let bar = [
        (hue & 0xff) as u8 | 0x40,
        ((hue >> 8) & 0xff) as u8 | 0x40,
        0x30,
    ];
    for y in 100..106 {
        for x in 28..292 {
            px[y * w + x] = bar;
        }
    }
    let travel = (w - 30) as f64;
    let phase = (t * 0.5).fract() * 2.0;
    let sx = (if phase < 1.0 { phase } else { 2.0 - phase } * travel) as usize;
    for y in 140..170 {
        for x in sx..sx + 30 {
            px[y * w + x] = [255, 170, 0];
        }
    }
    px
}

/// Serves one RFB session over an upgraded WebSocket until the client goes away.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocketStream<S>,
    name: &str,
) -> std::io::Result<()> {
    let started = Instant::now();
    let mut input: Vec<u8> = Vec::new();
    let mut format = PixelFormat::SERVER;
    let mut last_frame = Instant::now() - FRAME_INTERVAL;

    ws.send(Message::binary(b"RFB 003.008\n".to_vec()))
        .await
        .map_err(io)?;
    need(&mut ws, &mut input, 12).await?;
    input.drain(..12);
    // One security type: None.
    ws.send(Message::binary(vec![1u8, 1])).await.map_err(io)?;
    need(&mut ws, &mut input, 1).await?;
    input.drain(..1);
    ws.send(Message::binary(0u32.to_be_bytes().to_vec()))
        .await
        .map_err(io)?;
    need(&mut ws, &mut input, 1).await?; // ClientInit (shared flag)
    input.drain(..1);
    let title = format!("deskgate demo desktop {name}");
    let mut init = Vec::new();
    init.extend_from_slice(&WIDTH.to_be_bytes());
    init.extend_from_slice(&HEIGHT.to_be_bytes());
    init.extend_from_slice(&PixelFormat::SERVER.wire());
    init.extend_from_slice(&(title.len() as u32).to_be_bytes());
    init.extend_from_slice(title.as_bytes());
    ws.send(Message::binary(init)).await.map_err(io)?;

    loop {
        need(&mut ws, &mut input, 1).await?;
        let len = match input[0] {
            0 => 20,
            2 => {
                need(&mut ws, &mut input, 4).await?;
                4 + 4 * usize::from(u16::from_be_bytes([input[2], input[3]]))
            }
            3 => 10,
            4 => 8,
            5 => 6,
            6 => {
                need(&mut ws, &mut input, 8).await?;
                8 + u32::from_be_bytes([input[4], input[5], input[6], input[7]]) as usize
            }
            other => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("RFB message type {other} is not understood"),
                ))
            }
        };
        need(&mut ws, &mut input, len).await?;
        let msg: Vec<u8> = input.drain(..len).collect();
        match msg[0] {
            0 => {
                if let Some(f) = PixelFormat::parse(&msg[4..20]) {
                    format = f;
                }
            }
            3 => {
                let incremental = msg[1] != 0;
                if incremental {
                    // Pace the picture: at most one frame per interval.
                    let due = last_frame + FRAME_INTERVAL;
                    tokio::time::sleep_until(due.into()).await;
                }
                last_frame = Instant::now();
                let pixels = paint(started.elapsed().as_secs_f64(), name);
                let mut update = Vec::with_capacity(16 + pixels.len() * format.bytes);
                update.extend_from_slice(&[0, 0, 0, 1]);
                for v in [0, 0, WIDTH, HEIGHT] {
                    update.extend_from_slice(&v.to_be_bytes());
                }
                update.extend_from_slice(&0i32.to_be_bytes());
                for p in pixels {
                    format.put(&mut update, p);
                }
                ws.send(Message::binary(update)).await.map_err(io)?;
            }
            _ => {} // encodings, keys, pointer, clipboard: a picture needs none of them
        }
    }
}

/// Reads WebSocket messages into `input` until it holds `n` bytes.
async fn need<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    input: &mut Vec<u8>,
    n: usize,
) -> std::io::Result<()> {
    while input.len() < n {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => input.extend_from_slice(&b),
            Some(Ok(Message::Text(t))) => input.extend_from_slice(t.as_bytes()),
            Some(Ok(Message::Close(_))) | None => {
                return Err(std::io::ErrorKind::UnexpectedEof.into())
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(io(e)),
        }
    }
    Ok(())
}

fn io(e: tokio_tungstenite::tungstenite::Error) -> std::io::Error {
    std::io::Error::other(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_follow_the_client_format() {
        // noVNC's: 32 bpp little-endian, red in the low byte.
        let novnc =
            PixelFormat::parse(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 0, 8, 16, 0, 0, 0]).unwrap();
        let mut out = Vec::new();
        novnc.put(&mut out, [1, 2, 3]);
        assert_eq!(out, [1, 2, 3, 0]);
        let mut out = Vec::new();
        PixelFormat::SERVER.put(&mut out, [1, 2, 3]);
        assert_eq!(out, [3, 2, 1, 0]);
    }

    #[test]
    fn the_picture_moves() {
        assert_ne!(paint(0.0, "demo"), paint(0.5, "demo"));
    }
}
