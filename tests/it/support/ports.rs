//! TCP ports for the processes a test starts (redis-server, warden's binary), reserved so that
//! no other test — in this process or in another one: nextest runs each test in a process of
//! its own, several at once — is handed the same port.
//!
//! Why not "bind 127.0.0.1:0, read the port, drop the listener": between the drop and the
//! moment the child binds, the kernel is free to give that port away again, and it does: to
//! the next `bind(:0)` of a concurrent test, or as the local port of any outgoing connection
//! (warden connecting to its broker, a Celery worker, redis-cli), because `:0` ports come from
//! the same ephemeral range as outgoing connections. Keeping the listener open until the child
//! takes over is impossible for a redis-server, which binds the port itself.
//!
//! So a port is reserved in two ways at once:
//! - It comes from a pool *below* the kernel's ephemeral range
//!   (`/proc/sys/net/ipv4/ip_local_port_range`): the kernel never hands these out on its own,
//!   neither for `bind(:0)` nor for outgoing connections, so only an explicit `bind` can take
//!   one.
//! - Each explicit binder among the tests claims its port first with an exclusive `flock` on
//!   `/tmp/warden-test-ports/<port>.lock`. Every test process honours it, and the kernel
//!   releases it when the holder exits, even on SIGKILL (a test killed by nextest's timeout
//!   leaves no stale reservation behind, which an `O_EXCL` lock file would). The lock files
//!   are never removed: unlinking one races with a process that has just opened it, and two
//!   processes could then each lock a different file for the same port.
//!
//! A port that something outside the tests listens on is skipped (checked by binding it once
//! it is claimed), and the search starts at an offset derived from the process id, so that
//! concurrent test processes rarely even try the same lock file. What is left — a foreign
//! program binding a port of the pool between the check and the child's bind — is covered by
//! [`super::RedisServer`], which starts again on a fresh port when its log says "Address
//! already in use".
use std::{
    fs::{File, OpenOptions, TryLockError},
    net::TcpListener,
    ops::Range,
    path::PathBuf,
};

/// How many ports the pool holds.
const POOL_SIZE: u16 = 10_000;

/// A port on 127.0.0.1 that this test owns until the value is dropped.
#[derive(Debug)]
pub struct Port {
    port: u16,
    /// Holds the `flock`; closing it releases the reservation.
    _lock: File,
}

impl Port {
    pub fn get(&self) -> u16 {
        self.port
    }
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.port.fmt(f)
    }
}

/// Reserves a port nobody listens on (see the module documentation).
pub fn reserve_port() -> Port {
    let pool = pool();
    let dir = lock_dir();
    let len = u32::from(pool.end - pool.start);
    // Spread processes over the pool (a large odd step, so that neighbouring pids land far
    // apart), then walk it from there.
    let offset = std::process::id().wrapping_mul(7919) % len;
    for i in 0..len {
        let port = pool.start + ((offset + i) % len) as u16;
        let path = dir.join(format!("{port}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => panic!("cannot lock {}: {e}", path.display()),
        }
        // Claimed among the tests; is anything else listening there?
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Port { port, _lock: file };
        }
    }
    panic!("no free port left in {pool:?} (see {})", dir.display());
}

fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("warden-test-ports");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// [`POOL_SIZE`] ports just below the kernel's ephemeral range (or just above it, where the
/// range starts too low to leave room below).
fn pool() -> Range<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let mut bounds = range.split_whitespace().map(|n| n.parse::<u16>().ok());
    let (Some(Some(low)), Some(Some(high))) = (bounds.next(), bounds.next()) else {
        panic!("cannot read the ephemeral port range from {range:?}");
    };
    if low >= 1024 + POOL_SIZE {
        low - POOL_SIZE..low
    } else if high <= u16::MAX - POOL_SIZE {
        high + 1..high + 1 + POOL_SIZE
    } else {
        panic!("the ephemeral port range {low}-{high} leaves no room for the test ports");
    }
}
