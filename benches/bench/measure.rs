//! Measuring: a child process's wall time and peak memory (`wait4` rusage), summary
//! statistics, throwaway namespaces, and waiting for the machine to be idle between runs.

use std::fs::File;
use std::io::{self, Read};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::common;

/// One finished child process.
#[derive(Debug, Clone)]
pub struct Measured {
    /// From just before `spawn` to the moment the child exited (before it was reaped).
    pub wall: Duration,
    /// Exit code, or None when killed by a signal.
    pub code: Option<i32>,
    /// Peak resident set size of the command, KiB (None without GNU time).
    pub maxrss_kib: Option<u64>,
    /// User and system CPU time of the child.
    pub cpu: Duration,
    pub stdout: String,
    pub stderr: String,
    /// Killed by the watchdog after the timeout.
    pub timed_out: bool,
}

impl Measured {
    pub fn ms(&self) -> f64 {
        self.wall.as_secs_f64() * 1e3
    }

    /// Panics with the output unless the exit code is one of `codes`.
    #[track_caller]
    pub fn expect_code(&self, codes: &[i32], what: &str) -> &Measured {
        assert!(
            !self.timed_out && self.code.is_some_and(|c| codes.contains(&c)),
            "{what}: exit {:?} (timed out: {}), expected {codes:?}\n--- stdout (first 2000 bytes) ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.timed_out,
            head(&self.stdout, 2000),
            head(&self.stderr, 4000)
        );
        self
    }
}

fn head(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// GNU time, used as a thin wrapper for the peak memory of the command alone (see
/// [`measure`]).
pub const GNU_TIME: &str = "/usr/bin/time";

/// Runs `cmd` (stdin closed, stdout and stderr to temporary files so no reader thread
/// competes with it) and measures its wall time from just before `spawn` to its exit.
///
/// Peak memory: `ru_maxrss` of a child counts the pages of the forked copy of its parent
/// (the exec'd image's own peak is max'ed with the peak of the mm it replaced), so a child
/// of this bench would report at least the bench's own RSS. The command therefore runs under
/// `/usr/bin/time -f %M` (GNU time, a ~2 MiB process), whose report is the command's own
/// peak; without GNU time `maxrss_kib` is None.
///
/// The wrapper and the command form their own process group; after `timeout` a watchdog
/// kills that group by its ID (the wrapper has not been reaped yet, so the ID cannot have
/// been reused). The command inherits the network namespace of the calling thread: call this
/// from [`common::in_ns`] to run it in a namespace without `ip netns exec`.
pub fn measure(cmd: Command, timeout: Duration) -> io::Result<Measured> {
    use std::os::unix::process::CommandExt;
    let out = tempfile::tempfile()?;
    let err = tempfile::tempfile()?;
    let rss_file = tempfile::NamedTempFile::new()?;
    let have_time = std::path::Path::new(GNU_TIME).is_file();
    let mut run = if have_time {
        let mut w = Command::new(GNU_TIME);
        w.arg("-f").arg("%M").arg("-o").arg(rss_file.path());
        w.arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => w.env(k, v),
                None => w.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            w.current_dir(d);
        }
        w
    } else {
        cmd
    };
    run.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(err.try_clone()?)
        .process_group(0);
    let start = Instant::now();
    let child = run.spawn()?;
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");

    let killed = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = {
        let killed = Arc::clone(&killed);
        thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
                killed.store(true, Ordering::SeqCst);
                // SAFETY: kill(2) on the process group of our own child, not reaped yet.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        })
    };
    // Wait for the exit without reaping, so the PID stays ours until the watchdog is gone.
    loop {
        // SAFETY: siginfo_t is plain data; waitid writes it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child with a valid siginfo pointer.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let wall = start.elapsed();
    drop(done_tx);
    let _ = watchdog.join();
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own exited child (reaps it).
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if rc != pid {
        return Err(io::Error::last_os_error());
    }
    drop(child);
    let timed_out = killed.load(Ordering::SeqCst);
    let mut code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    if have_time && timed_out {
        code = None;
    }
    let maxrss_kib = if have_time {
        std::fs::read_to_string(rss_file.path())
            .ok()
            .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()))
    } else {
        None
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Measured {
        wall,
        code,
        maxrss_kib,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        stdout: read_all(out)?,
        stderr: read_all(err)?,
        timed_out,
    })
}

fn read_all(mut f: File) -> io::Result<String> {
    use std::io::Seek;
    f.rewind()?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(String::from_utf8_lossy(&v).into_owned())
}

/// [`measure`] on a thread in namespace `ns`, panicking on a spawn error.
pub fn measure_in(ns: &str, cmd: impl FnOnce() -> Command + Send, timeout: Duration) -> Measured {
    common::in_ns(ns, || {
        let c = cmd();
        let what = format!("{c:?}");
        measure(c, timeout).unwrap_or_else(|e| panic!("{what}: {e}"))
    })
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Median and spread of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub q1: f64,
    pub q3: f64,
}

/// Linear-interpolated quantile of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

pub fn stats(sample: &[f64]) -> Stats {
    assert!(!sample.is_empty(), "empty sample");
    let mut v = sample.to_vec();
    v.sort_by(f64::total_cmp);
    Stats {
        n: v.len(),
        median: quantile(&v, 0.5),
        min: v[0],
        max: v[v.len() - 1],
        q1: quantile(&v, 0.25),
        q3: quantile(&v, 0.75),
    }
}

impl Stats {
    /// `123 [118–131]` (median [min–max]) with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!(
            "{:.d$} [{:.d$}–{:.d$}]",
            self.median,
            self.min,
            self.max,
            d = digits
        )
    }
}

/// Ratio of two medians with a range from the extremes (`a.min/b.max` to `a.max/b.min`).
pub fn ratio(a: &Stats, b: &Stats) -> String {
    format!(
        "{:.2} [{:.2}–{:.2}]",
        a.median / b.median,
        a.min / b.max,
        a.max / b.min
    )
}

// ---------------------------------------------------------------------------------------------
// Namespaces and idleness

static SCRATCH: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty network namespace (`lo` up) named `pbxw-<pid>-b<n>`, deleted on drop (the
/// test harness's naming, so a later run removes it if this process dies first).
pub fn scratch_ns() -> common::Netns {
    let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
    common::Netns::create(&format!("pbxw-{}-b{n}", std::process::id()))
}

/// Pause after a namespace holding `objects` rules or set elements was deleted: the kernel
/// frees them in a worker after `ip netns del` returns, and that must not be billed to the
/// next measurement. (Waiting for an idle machine does not work on a shared one.)
pub fn settle(objects: usize) {
    thread::sleep(Duration::from_millis(100 + 2 * objects as u64 / 1000));
}

/// Checks of this module that need neither root nor the network.
pub fn self_check() {
    let s = stats(&[5.0, 1.0, 3.0, 2.0, 4.0]);
    assert_eq!(
        (s.median, s.min, s.max, s.q1, s.q3),
        (3.0, 1.0, 5.0, 2.0, 4.0)
    );
    assert_eq!(stats(&[1.0, 2.0]).median, 1.5);
    assert_eq!(s.show(1), "3.0 [1.0–5.0]");
    let m = measure(Command::new("true"), Duration::from_secs(10)).expect("run true");
    assert_eq!(m.code, Some(0));
    assert!(m.maxrss_kib.is_none_or(|k| k > 0));
    let mut sleep = Command::new("sleep");
    sleep.arg("5");
    let m = measure(sleep, Duration::from_millis(100)).expect("run sleep");
    assert!(m.timed_out && m.code.is_none() && m.wall < Duration::from_secs(3));
}
