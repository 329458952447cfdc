//! A private Postgres cluster for tests, from Debian's binaries (`/usr/lib/postgresql/*/bin`;
//! `scripts/test` installs the `postgresql` package when they are missing). Only std: the
//! integration tests include this file as it is
//! (`#[path = "../../crates/store/tests/store/postgres.rs"] mod postgres;`).
//!
//! - [`PostgresCluster::shared`]: one cluster per test process, started on first use. `cargo
//!   test` shares it among a binary's tests; nextest runs each test in a process of its own,
//!   which then starts its own (initdb and start take about a second).
//! - [`PostgresCluster::start_new`]: a cluster of the caller's own, for a test that cuts the
//!   database ([`PostgresCluster::stop`]) and brings it back ([`PostgresCluster::start`], on
//!   the same port).
//! - [`PostgresCluster::database`]: a fresh database per test (`t_<pid>_<n>`), as a URL.
//!
//! `initdb` refuses to run as root: as root, every server command runs as the `postgres` user
//! (`runuser`), in a `mktemp -d` under /tmp handed to that user. The server listens on
//! 127.0.0.1 only, with its socket in that directory, and trusts local connections. Durability
//! is off by default (`fsync=off`): test data need not survive a crash; pass
//! `fsync=on` and friends to [`PostgresCluster::start_new_with`] to measure.
//!
//! The port comes from the pool the integration tests reserve theirs from (`tests/it/support/
//! ports.rs`): below the kernel's ephemeral range, claimed with an exclusive `flock` on
//! `/tmp/warden-test-ports/<port>.lock`, held for as long as the cluster lives so that a
//! restart finds its port free.
//!
//! Cleanup: a static is never dropped, so no `Drop` can stop the shared cluster when the
//! process exits. Each cluster therefore starts a watchdog — a backgrounded `sh` loop in a
//! process group of its own (so that a Ctrl-C to the tests does not take it first) — that
//! polls the test process id and, once the process is gone (however it ended, SIGKILL
//! included), stops the cluster and removes its directory. A cluster that is dropped (one from
//! `start_new`) stops at once.
#![allow(dead_code)]

use std::{
    fs::{File, OpenOptions, TryLockError},
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

/// Settings every test cluster starts with (later `-c` settings override them).
const FAST: &[&str] = &[
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
];

pub struct PostgresCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    settings: Vec<String>,
    /// Holds the port's reservation.
    _port_lock: File,
}

impl std::fmt::Debug for PostgresCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCluster")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .finish()
    }
}

static DATABASES: AtomicU32 = AtomicU32::new(0);

impl PostgresCluster {
    /// The process's cluster, started on first use.
    pub fn shared() -> &'static PostgresCluster {
        static SHARED: OnceLock<PostgresCluster> = OnceLock::new();
        SHARED.get_or_init(PostgresCluster::start_new)
    }

    /// A cluster of the caller's own (stopped when dropped).
    pub fn start_new() -> PostgresCluster {
        Self::start_new_with(&[])
    }

    /// A cluster of the caller's own, with `name=value` server settings.
    pub fn start_new_with(settings: &[&str]) -> PostgresCluster {
        let bin = binaries();
        let dir = mktemp();
        let root = is_root();
        if root {
            run(Command::new("chown").arg("postgres").arg(&dir));
        }
        let (port, lock) = reserve_port();
        let cluster = PostgresCluster {
            bin,
            dir,
            port,
            settings: FAST
                .iter()
                .chain(settings)
                .map(|s| (*s).to_owned())
                .collect(),
            _port_lock: lock,
        };
        run(cluster
            .server_command("initdb")
            .arg("-D")
            .arg(cluster.data())
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]));
        cluster.watchdog();
        cluster.start();
        cluster
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` (`postgres` always exists).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty database, as a URL.
    pub fn database(&self) -> String {
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        self.sql(&format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs SQL through psql on the `postgres` database; panics with psql's words on failure.
    pub fn sql(&self, sql: &str) -> String {
        let out = run(Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-c", sql]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Starts the server (waits until it accepts connections).
    pub fn start(&self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        for s in &self.settings {
            options.push_str(" -c ");
            options.push_str(s);
        }
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("pg_ctl start");
        if !out.status.success() {
            panic!(
                "pg_ctl start failed: {}\n{}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            );
        }
    }

    /// Stops the server (fast shutdown: open connections are cut), keeping its data.
    pub fn stop(&self) {
        run(self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"]));
    }

    /// The postmaster's process id (the first line of `postmaster.pid`), while running.
    pub fn server_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    pub fn is_running(&self) -> bool {
        self.server_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("status")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A server binary, run as the `postgres` user when we are root.
    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command.current_dir(&self.dir);
        command
    }

    /// Stops the cluster and removes its directory once this process is gone.
    fn watchdog(&self) {
        let sudo = if is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        // Backgrounded by the shell, which exits at once: the loop is re-parented to init
        // (nobody is left to reap) and outlives this process, as it must.
        let script = format!(
            "(while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {sudo}'{pg_ctl}' -D '{data}' -m immediate -w stop; \
             rm -rf '{dir}') >/dev/null 2>&1 </dev/null &",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data().display(),
            dir = self.dir.display(),
        );
        let started = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .status()
            .expect("start the cluster's watchdog");
        assert!(started.success(), "the cluster's watchdog did not start");
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let _ = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest installed major's binaries.
fn binaries() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no Postgres binaries under /usr/lib/postgresql/*/bin: run scripts/test, which installs postgresql"
        ),
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn mktemp() -> PathBuf {
    let out = run(Command::new("mktemp").args(["-d", "/tmp/warden-pg.XXXXXXXX"]));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{command:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A port from the tests' pool, claimed with a flock (see the module documentation).
fn reserve_port() -> (u16, File) {
    const POOL_SIZE: u16 = 10_000;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let mut bounds = range.split_whitespace().map(|n| n.parse::<u16>().ok());
    let (Some(Some(low)), Some(Some(high))) = (bounds.next(), bounds.next()) else {
        panic!("cannot read the ephemeral port range from {range:?}");
    };
    let pool = if low >= 1024 + POOL_SIZE {
        low - POOL_SIZE..low
    } else if high <= u16::MAX - POOL_SIZE {
        high + 1..high + 1 + POOL_SIZE
    } else {
        panic!("the ephemeral port range {low}-{high} leaves no room for the test ports");
    };
    let dir = Path::new("/tmp/warden-test-ports");
    std::fs::create_dir_all(dir).expect("create /tmp/warden-test-ports");
    let len = u32::from(pool.end - pool.start);
    let offset = std::process::id().wrapping_mul(7919).wrapping_add(17) % len;
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
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return (port, file);
        }
    }
    panic!("no free port left in {pool:?}");
}
