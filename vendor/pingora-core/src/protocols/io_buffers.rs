// deskgate patch: I/O buffers lent per use.

//! Buffers that a connection holds only while they hold bytes.
//!
//! A connection waiting for its peer (an idle WebSocket can wait for hours) should not keep a
//! 64 KiB read buffer, or a write buffer grown by its last burst, for the wait. A read here
//! borrows a buffer for the one poll that fills it, gives it straight back when the poll is
//! pending, and the reader gives it back once its bytes are consumed; a batched write borrows
//! one for the batch. Each thread keeps a few drained buffers, so a busy connection reuses warm
//! memory instead of allocating.

use bytes::BytesMut;
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Drained buffers a thread keeps for reuse.
const SPARE_PER_THREAD: usize = 4;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `capacity` bytes.
pub fn borrow(capacity: usize) -> BytesMut {
    match SPARE.with(|spare| spare.borrow_mut().pop()) {
        Some(mut buf) => {
            buf.reserve(capacity);
            buf
        }
        None => BytesMut::with_capacity(capacity),
    }
}

/// Give a buffer back for reuse on this thread; its contents are dropped.
pub fn give_back(mut buf: BytesMut) {
    if buf.capacity() == 0 {
        return;
    }
    buf.clear();
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_PER_THREAD {
            spare.push(buf);
        }
    })
}

/// Poll one read of at most `limit` bytes from `stream` into a borrowed buffer.
///
/// `Some(buf)` holds the bytes read (give it back with [`give_back`] once they are consumed);
/// `None` is the end of the stream. A pending or failed read holds no buffer.
pub fn poll_read<S>(
    stream: &mut S,
    cx: &mut Context<'_>,
    limit: usize,
) -> Poll<io::Result<Option<BytesMut>>>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let mut buf = borrow(limit);
    // A fresh read future per poll: it only borrows the stream and the buffer, so dropping it
    // after one poll loses nothing.
    let polled = pin!((&mut *stream).take(limit as u64).read_buf(&mut buf)).poll(cx);
    match polled {
        Poll::Ready(Ok(n)) if n > 0 => Poll::Ready(Ok(Some(buf))),
        other => {
            give_back(buf);
            other.map_ok(|_| None)
        }
    }
}
