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

// `recv` and `send` are made as raw system calls, not through libc's
// wrappers of the same names: those are thread cancellation points, and
// enabling and disabling cancellation around each call cost about 130
// instructions a transaction (pgward never cancels threads); libc's
// generic `syscall(2)` still costs about 20 a call for moving its
// arguments around. On x86-64 Linux the call is the `syscall` instruction
// itself; elsewhere `syscall(2)`. The loop's sockets are nonblocking, so a
// call never waits anyway.

/// A system call with six arguments: its result, or the error it returned.
#[inline(always)]
fn syscall6(number: libc::c_long, args: [usize; 6]) -> io::Result<usize> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let ret: isize;
        // SAFETY: the kernel's x86-64 calling convention: the number in
        // rax, the arguments in rdi, rsi, rdx, r10, r8, r9; it returns in
        // rax and clobbers rcx and r11. Memory is not declared untouched:
        // the kernel reads and writes what the arguments point at, which
        // the callers vouch for.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") number as isize => ret,
                in("rdi") args[0],
                in("rsi") args[1],
                in("rdx") args[2],
                in("r10") args[3],
                in("r8") args[4],
                in("r9") args[5],
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        // -4095..-1 is an error number; anything else the result.
        if (-4095..0).contains(&ret) {
            Err(io::Error::from_raw_os_error(-ret as i32))
        } else {
            Ok(ret as usize)
        }
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        // SAFETY: as for the callers' arguments (each widened to a long,
        // as `syscall` reads them).
        let n = unsafe {
            libc::syscall(
                number,
                args[0] as libc::c_long,
                args[1] as libc::c_long,
                args[2] as libc::c_long,
                args[3] as libc::c_long,
                args[4] as libc::c_long,
                args[5] as libc::c_long,
            )
        };
        if n >= 0 {
            Ok(n as usize)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// `recv` into `room` without waiting: bytes read (0: end of stream).
pub(super) fn recv(fd: RawFd, room: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    loop {
        // The kernel writes at most `room.len()` bytes into `room`; the
        // address arguments are null (a connected socket).
        let args = [
            fd as usize,
            room.as_mut_ptr() as usize,
            room.len(),
            libc::MSG_DONTWAIT as usize,
            0,
            0,
        ];
        match syscall6(libc::SYS_recvfrom, args) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            done => return done,
        }
    }
}

/// `send` of `bytes` without waiting (and without SIGPIPE): bytes sent.
pub(super) fn send(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    loop {
        // The kernel reads at most `bytes.len()` bytes of `bytes`; the
        // address is null (a connected socket).
        let args = [
            fd as usize,
            bytes.as_ptr() as usize,
            bytes.len(),
            (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as usize,
            0,
            0,
        ];
        match syscall6(libc::SYS_sendto, args) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            done => return done,
        }
    }
}
