//! When a response reached the client's socket, from the kernel (`SO_TIMESTAMPNS`).
//!
//! A load generator on one thread with thousands of connections takes a while to get round to
//! a response that has arrived: under a burst its own run queue adds milliseconds that are not
//! the server's. With `SO_TIMESTAMPNS` on the socket, every `recvmsg` also returns the time the
//! kernel received the data it hands back (the last segment read, for TCP), so "request written
//! → response arrived" can be measured apart from "request written → response read". Both
//! clocks are `CLOCK_REALTIME` (the kernel stamps with it; [`now_ns`] reads it).

use std::io;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use nix::sys::time::TimeSpec;

/// Nanoseconds since the Unix epoch on `CLOCK_REALTIME`, the clock of the kernel's stamps.
pub fn now_ns() -> i128 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Asks the kernel to stamp received data on this socket. The first socket of a host to ask
/// switches stamping on a moment later (the kernel does it from a deferred work item), so the
/// first data may come without a stamp: [`recv`] then returns `None`.
pub fn enable<S: AsFd>(socket: &S) -> io::Result<()> {
    setsockopt(socket, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// One `recvmsg` into `buf`: the bytes read and the kernel's receive time of the data, if it
/// sent one. Never blocks on its own: on a non-blocking socket it returns `WouldBlock`.
pub fn recv<S: AsRawFd>(socket: &S, buf: &mut [u8]) -> io::Result<(usize, Option<i128>)> {
    let mut cmsg = nix::cmsg_space!(TimeSpec);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let mut stamp = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmTimestampns(ts) = c {
            stamp = Some(i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec()));
        }
    }
    Ok((msg.bytes, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn stamps_received_data_between_the_send_and_the_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        enable(&server).unwrap();
        // The kernel switches stamping on for the whole stack from a deferred work item when the
        // first socket asks for it; data that arrives before that carries no stamp.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let before = now_ns();
        client.write_all(b"hello").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut buf = [0u8; 16];
        let (n, stamp) = recv(&server, &mut buf).unwrap();
        let after = now_ns();
        assert_eq!(&buf[..n], b"hello");
        let stamp = stamp.expect("the kernel stamps data once SO_TIMESTAMPNS is on");
        assert!(before <= stamp, "stamped before it was sent");
        // The read came at least 20 ms after the data arrived; the stamp tells them apart.
        assert!(
            after - stamp >= 20_000_000,
            "stamp {stamp} is the read time {after}"
        );
    }
}
