//! The kernel's view of one TCP connection (`getsockopt(TCP_INFO)`), reduced to the figures the
//! admin page shows: smoothed RTT and its variance, retransmitted and sent data segments (loss
//! is their ratio between two readings), the delivery rate, bytes in flight and bytes queued in
//! the socket not yet sent.
//!
//! One system call per socket per reading and no allocation; the session sampler calls it every
//! few seconds, never the data path.

use std::io;
use std::os::unix::io::RawFd;

/// One reading of a connection, from deskgate's side: RTT, loss and rate describe the path
/// towards the peer (deskgate sends, the peer acknowledges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegInfo {
    /// Smoothed round-trip time (µs).
    pub rtt_us: u32,
    /// Its mean deviation (µs).
    pub rttvar_us: u32,
    /// Data segments retransmitted since the connection opened.
    pub retrans_total: u32,
    /// Data segments sent since the connection opened.
    pub data_segs_out: u32,
    /// The kernel's latest estimate of the rate the peer takes data at (bytes/s); 0 before any.
    pub delivery_rate: u64,
    /// Bytes sent and not yet acknowledged (segments in flight x MSS).
    pub unacked_bytes: u32,
    /// Bytes written to the socket and not yet sent.
    pub notsent_bytes: u32,
}

/// Reads `fd`'s `TCP_INFO`. The caller keeps `fd` open meanwhile (see `SessionRegistry`).
pub fn read(fd: RawFd) -> io::Result<LegInfo> {
    // SAFETY: tcp_info is plain integers; all-zero is a valid value, and a kernel older than the
    // struct fills only a prefix (the rest stays 0).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes; the kernel writes at most that and updates len.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(LegInfo {
        rtt_us: info.tcpi_rtt,
        rttvar_us: info.tcpi_rttvar,
        retrans_total: info.tcpi_total_retrans,
        data_segs_out: info.tcpi_data_segs_out,
        delivery_rate: info.tcpi_delivery_rate,
        unacked_bytes: info.tcpi_unacked.saturating_mul(info.tcpi_snd_mss),
        notsent_bytes: info.tcpi_notsent_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::io::AsRawFd;

    #[test]
    fn reads_a_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(&[7; 64 * 1024]).unwrap();
        let mut got = vec![0; 64 * 1024];
        server.read_exact(&mut got).unwrap();
        let info = read(client.as_raw_fd()).unwrap();
        assert!(info.data_segs_out > 0, "{info:?}");
        assert!(info.rtt_us > 0, "{info:?}");
        assert_eq!(info.retrans_total, 0, "{info:?}");
    }

    #[test]
    fn a_descriptor_that_is_no_socket_is_an_error() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(read(file.as_raw_fd()).is_err());
    }
}
