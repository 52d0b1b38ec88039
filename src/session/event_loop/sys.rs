//! The few system calls the event loop makes, each wrapped once: epoll, an
//! eventfd for wake-ups from other threads, and nonblocking `recv` / `send`
//! on a socket the loop owns. Every `unsafe` block of the loop is here, each
//! a single libc call on a descriptor this module's types own, or on a
//! buffer borrowed for exactly the call.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An epoll instance.
pub(super) struct Epoll(OwnedFd);

/// What one readiness event says.
#[derive(Clone, Copy)]
pub(super) struct Event {
    pub(super) token: u64,
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// The peer closed its side, or the socket failed: reads (or all
    /// calls) end at once from now on, whatever a short read suggests.
    pub(super) read_closed: bool,
    pub(super) write_closed: bool,
}

/// Room for the events of one wait.
pub(super) struct Events(Vec<libc::epoll_event>);

impl Events {
    pub(super) fn with_room(n: usize) -> Self {
        Self(vec![libc::epoll_event { events: 0, u64: 0 }; n])
    }
}

impl Epoll {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: no pointers; the descriptor returned is ours alone.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for reads and writes, edge-triggered: an event comes
    /// when the socket becomes readable or writable again, so a side that
    /// read until `EAGAIN` learns of new bytes without asking each time.
    pub(super) fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let events = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET;
        self.ctl(libc::EPOLL_CTL_ADD, fd, events as u32, token)
    }

    /// Watches `fd` for reads only, level-triggered (the wake-up eventfd).
    pub(super) fn add_readable(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, token)
    }

    pub(super) fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: `event` lives for the call; the kernel copies it.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut event) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (-1: without end) for events, into `events`;
    /// those that came. An interrupted wait returns none.
    pub(super) fn wait<'e>(
        &self,
        events: &'e mut Events,
        timeout_ms: i32,
    ) -> io::Result<impl Iterator<Item = Event> + 'e> {
        let room = i32::try_from(events.0.len()).unwrap_or(i32::MAX);
        // SAFETY: the kernel writes at most `room` events into the vector.
        let n = unsafe {
            libc::epoll_wait(self.0.as_raw_fd(), events.0.as_mut_ptr(), room, timeout_ms)
        };
        let n = if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            0
        } else {
            n as usize
        };
        const READ: u32 =
            (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        const WRITE: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        const READ_CLOSED: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        const WRITE_CLOSED: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
        Ok(events.0[..n].iter().map(|e| {
            let (bits, token) = (e.events, e.u64);
            Event {
                token,
                readable: bits & READ != 0,
                writable: bits & WRITE != 0,
                read_closed: bits & READ_CLOSED != 0,
                write_closed: bits & WRITE_CLOSED != 0,
            }
        }))
    }
}

/// An eventfd: other threads write to it to wake the loop.
pub(super) struct WakeFd(OwnedFd);

impl WakeFd {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: no pointers; the descriptor returned is ours alone.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(super) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Makes the eventfd readable (its counter can only overflow after
    /// 2^64 - 1 unread wakes, and a wake that fails finds it readable).
    pub(super) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, which outlives the call.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter, so the next `wake` makes it readable again.
    pub(super) fn clear(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads at most 8 bytes into `n`.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }
}

// `recv` and `send` go through `syscall(2)`, not libc's wrappers of the
// same names: those are thread cancellation points (each argument is
// widened to a `long`, as `syscall` reads them), and enabling and
// disabling cancellation around each call cost about 130 instructions a
// transaction (pgward never cancels threads). The loop's sockets are
// nonblocking, so a call never waits anyway.

/// `recv` into `room` without waiting: bytes read (0: end of stream).
pub(super) fn recv(fd: RawFd, room: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    loop {
        // SAFETY: the kernel writes at most `room.len()` bytes into `room`;
        // the address arguments are null (a connected socket).
        let n = unsafe {
            libc::syscall(
                libc::SYS_recvfrom,
                libc::c_long::from(fd),
                room.as_mut_ptr(),
                room.len(),
                libc::c_long::from(libc::MSG_DONTWAIT),
                std::ptr::null_mut::<libc::sockaddr>(),
                std::ptr::null_mut::<libc::socklen_t>(),
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `send` of `bytes` without waiting (and without SIGPIPE): bytes sent.
pub(super) fn send(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    loop {
        let no_address_len: libc::c_long = 0;
        // SAFETY: the kernel reads at most `bytes.len()` bytes of `bytes`;
        // the address is null (a connected socket).
        let n = unsafe {
            libc::syscall(
                libc::SYS_sendto,
                libc::c_long::from(fd),
                bytes.as_ptr(),
                bytes.len(),
                libc::c_long::from(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL),
                std::ptr::null::<libc::sockaddr>(),
                no_address_len,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
