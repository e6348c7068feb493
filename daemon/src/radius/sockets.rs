//! The RADIUS sockets as the core threads read them: datagrams taken
//! without waiting from any `radius.listen` socket, a wait in `poll` for
//! the next one that a stop interrupts, and the kernel's count of
//! datagrams dropped because a receive buffer was full (`SO_RXQ_OVFL`):
//! that buffer is the bound on requests waiting, and its drops are the
//! load shed under overload.

use std::io::IoSliceMut;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt};

pub struct Sockets {
    sockets: Vec<Arc<UdpSocket>>,
    /// The kernel's drop count last seen on each socket.
    dropped: Vec<AtomicU32>,
    /// Where the next read starts, so that no socket starves another.
    next: AtomicUsize,
    /// Readable once stopped.
    stop: EventFd,
}

/// One datagram read.
pub struct Datagram {
    pub socket: Arc<UdpSocket>,
    pub len: usize,
    pub source: SocketAddr,
    /// Datagrams the kernel dropped on this socket since the last count.
    pub dropped: u32,
}

impl Sockets {
    /// Takes bound sockets; asks the kernel to count its drops on each.
    pub fn new(sockets: Vec<UdpSocket>) -> std::io::Result<Sockets> {
        for socket in &sockets {
            socket.set_nonblocking(true)?;
            setsockopt(socket, sockopt::RxqOvfl, &1)?;
        }
        let dropped = sockets.iter().map(|_| AtomicU32::new(0)).collect();
        let stop = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Sockets {
            sockets: sockets.into_iter().map(Arc::new).collect(),
            dropped,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    pub fn local_addrs(&self) -> Vec<std::io::Result<SocketAddr>> {
        self.sockets.iter().map(|s| s.local_addr()).collect()
    }

    /// A datagram waiting on any socket, without waiting; `Err` for a
    /// receive error of the socket's own (on an unconnected UDP socket
    /// Linux reports no ICMP errors, so these are rare).
    pub fn try_recv(&self, buf: &mut [u8], cmsg: &mut [u8]) -> Option<std::io::Result<Datagram>> {
        let count = self.sockets.len();
        let start = self.next.load(Ordering::Relaxed);
        for i in 0..count {
            let index = (start + i) % count;
            match self.recv_on(index, buf, cmsg) {
                Err(Errno::EAGAIN) => continue,
                Err(Errno::EINTR) => return self.try_recv(buf, cmsg),
                result => {
                    self.next.store((index + 1) % count, Ordering::Relaxed);
                    return Some(result.map_err(std::io::Error::from));
                }
            }
        }
        None
    }

    fn recv_on(&self, index: usize, buf: &mut [u8], cmsg: &mut [u8]) -> nix::Result<Datagram> {
        let socket = &self.sockets[index];
        let mut iov = [IoSliceMut::new(buf)];
        let msg =
            recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::MSG_DONTWAIT)?;
        let len = msg.bytes;
        let source = msg.address.and_then(|a| socket_addr(&a)).ok_or(Errno::EAFNOSUPPORT)?;
        // Present once the kernel has dropped on this socket: its count then.
        let counted = msg
            .cmsgs()
            .ok()
            .and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::RxqOvfl(n) => Some(n),
                    _ => None,
                })
            })
            .unwrap_or(0);
        let seen = self.dropped[index].fetch_max(counted, Ordering::Relaxed);
        Ok(Datagram { socket: socket.clone(), len, source, dropped: counted.saturating_sub(seen) })
    }

    /// Waits until a socket is readable: `false` once stopped.
    pub fn wait(&self) -> bool {
        let mut fds: Vec<PollFd<'_>> =
            self.sockets.iter().map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN)).collect();
        fds.push(PollFd::new(self.stop.as_fd(), PollFlags::POLLIN));
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                // Cannot happen with valid descriptors; never spin on it.
                Err(_) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    break;
                }
            }
        }
        !fds.last().and_then(|f| f.revents()).is_some_and(|r| r.contains(PollFlags::POLLIN))
    }

    /// Ends every `wait`, now and later.
    pub fn stop(&self) {
        let _ = self.stop.write(1);
    }

    /// The room for one drop count.
    pub fn cmsg_buffer() -> Vec<u8> {
        nix::cmsg_space!(u32)
    }
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::new(v6.ip(), v6.port(), v6.flowinfo(), v6.scope_id())))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bound() -> (Sockets, SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        (Sockets::new(vec![socket]).unwrap(), addr)
    }

    #[test]
    fn reads_without_waiting_and_names_the_source() {
        let (sockets, addr) = bound();
        let mut buf = [0u8; 64];
        let mut cmsg = Sockets::cmsg_buffer();
        assert!(sockets.try_recv(&mut buf, &mut cmsg).is_none(), "nothing waiting");
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"hello", addr).unwrap();
        assert!(sockets.wait(), "readable, not stopped");
        let d = sockets.try_recv(&mut buf, &mut cmsg).unwrap().unwrap();
        assert_eq!((&buf[..d.len], d.source, d.dropped), (&b"hello"[..], client.local_addr().unwrap(), 0));
    }

    #[test]
    fn counts_what_the_kernel_dropped_on_a_full_buffer() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        setsockopt(&socket, sockopt::RcvBuf, &4096).unwrap();
        let sockets = Sockets::new(vec![socket]).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            client.send_to(&[7u8; 100], addr).unwrap();
        }
        let (mut buf, mut cmsg) = ([0u8; 256], Sockets::cmsg_buffer());
        let (mut read, mut dropped) = (0, 0);
        while let Some(d) = sockets.try_recv(&mut buf, &mut cmsg) {
            read += 1;
            dropped += d.unwrap().dropped;
        }
        assert!(read > 0 && read < 200, "a small buffer holds some: {read}");
        // The count comes with the next datagram the buffer takes.
        client.send_to(&[7u8; 100], addr).unwrap();
        assert!(sockets.wait());
        dropped += sockets.try_recv(&mut buf, &mut cmsg).unwrap().unwrap().dropped;
        assert_eq!(read + dropped, 200, "every datagram is read or counted as dropped");
        assert!(sockets.try_recv(&mut buf, &mut cmsg).is_none());
    }

    #[test]
    fn stop_ends_a_wait_at_once_and_every_later_one() {
        let (sockets, _) = bound();
        let sockets = Arc::new(sockets);
        let waiting = {
            let sockets = sockets.clone();
            std::thread::spawn(move || sockets.wait())
        };
        std::thread::sleep(Duration::from_millis(20));
        sockets.stop();
        assert!(!waiting.join().unwrap());
        assert!(!sockets.wait());
    }
}
