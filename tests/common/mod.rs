//! Shared harness for pbxwall's integration tests: the test runner and its skip rule
//! ([`harness`]), network namespaces ([`netns`]), servers, probes, DNS fixtures, bounded
//! commands and throwaway configurations.
//!
//! Every test binary does `mod common;`, writes its tests as plain functions and ends with
//! [`test_main!`], which lists each test under what it needs:
//!
//! ```ignore
//! mod common;
//! use common::{Needs, Probe, Proto::*, Servers, Topology};
//!
//! fn sip_from_whitelisted_source_only() {
//!     let topo = Topology::new();                       // namespaces "pbx" and "client"
//!     let _srv = Servers::start(&topo, &[5061], &[5060]); // listeners in "pbx"
//!     let cfg = common::TempConfig::new();
//!     let out = cfg.run(Some(topo.pbx_ns()), "add-ip", ["joe", "192.0.2.10", "--allow", "1"]);
//!     common::assert_exit(&out, 0, "add-ip");
//!     common::assert_probes(&topo, &[
//!         Probe::udp("192.0.2.10", 5060, true),
//!         Probe::udp("192.0.2.11", 5060, false),
//!     ]);
//! }   // guards drop in reverse order: config dir, servers, then the namespaces
//!
//! common::test_main! {
//!     Needs::ROOT => [sip_from_whitelisted_source_only],
//! }
//! ```
//!
//! Rules the harness keeps (and tests built on it must keep):
//! - each [`Topology`] and each [`Netns`] has its own namespaces (`pbxw-<pid>-<n>-...`) and
//!   veth names (≤ 15 characters), so tests run in parallel threads of one test binary;
//! - only documentation addresses (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
//!   2001:db8::/32) and loopback are used;
//! - everything started is stopped in `Drop` (also while unwinding from a panic): server
//!   threads are joined, child processes are killed by PID and reaped, namespaces deleted;
//! - every loop and every child process is bounded in count and time.
//!
//! The network namespace is a property of a *thread* (`setns(2)`), so the test thread itself
//! never changes namespace: [`in_ns`] (and [`Netns::run`]) runs a closure in a fresh scoped
//! thread that entered the namespace first. Sockets (including netlink sockets) stay in the
//! namespace they were created in.
//!
//! A test this machine cannot run (not root, `ip`/`nft` or another program missing) is
//! reported as ignored, never as passed, with a `SKIPPED <test>: <why>` line on stderr; with
//! `PBXWALL_TESTS_REQUIRE_ROOT=1` (CI) it fails instead. [`harness`] has the whole rule.

// Each test binary (and the benchmarks, which include this module too) uses part of it.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod dns;
pub mod harness;
pub mod netns;
pub mod probe;
pub mod servers;

pub use dns::{
    DNS_V4, DnsReply, Dnsmasq, QType, RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_SERVFAIL, ServfailDns,
    SilentDns, StubDns, ZONE, dns_query, dns_query_here,
};
pub use netns::{
    CLIENT_ADDRS, Names, Netns, PBX_V4, PBX_V6, Topology, enter_ns, in_ns, netns_exists,
    netns_list, nft, nft_ok, ns_cmd, ns_command, pbx_addr_for, spawn_in_ns,
};
pub use probe::{
    Outcome, PROBE_ATTEMPTS, PROBE_TIMEOUT, Probe, ProbeResult, Proto, assert_probes, check_probes,
    cross, probe_here, probe_in, probe_matrix, probe_matrix_with, tcp_probe, udp_flow,
    udp_flow_echoes, udp_probe,
};
pub use servers::Servers;

pub(crate) use harness::test_main;
pub use harness::{Needs, is_root};

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for one helper command (`ip`, `nft`, ...).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one run of a pbxwall binary through [`TempConfig::run`].
pub const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Env var: when set to a non-empty value other than `0`, a test this machine cannot run
/// (not root, a program missing) fails instead of being reported as ignored.
pub const REQUIRE_ROOT_ENV: &str = "PBXWALL_TESTS_REQUIRE_ROOT";

// ---------------------------------------------------------------------------------------------
// Programs

/// The programs every netfilter test needs (besides root).
pub const ROOT_TOOLS: [&str; 2] = ["ip", "nft"];

/// The programs of `tools` that [`tool`] cannot find.
pub fn missing_tools<'a>(tools: &[&'a str]) -> Vec<&'a str> {
    tools
        .iter()
        .copied()
        .filter(|t| tool(t).is_none())
        .collect()
}

/// Finds a program in `PATH` or the sbin directories (a non-root `PATH` often lacks them).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// Like [`tool`], but panics with a clear message when the program is missing.
pub fn tool_path(name: &str) -> PathBuf {
    tool(name).unwrap_or_else(|| panic!("`{name}` not found in PATH or /usr/sbin, /sbin"))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

// ---------------------------------------------------------------------------------------------
// Running commands, bounded

/// Runs a command with a time limit, its output captured through files: no pipe can fill up
/// and no grandchild holding a pipe (a build under `make`) can cut the output short.
pub fn run_to_files(cmd: &mut Command, limit: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} took longer than {limit:?}; stderr so far:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

/// Runs `cmd` to completion with stdin from `stdin` (or /dev/null), stdout and stderr
/// captured. After `timeout` the child is killed by PID and reaped, and an error (with what it
/// printed so far) is returned. Never blocks longer than `timeout` + about 2 s.
pub fn run_with_timeout(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // If the test binary is killed (SIGKILL, timeout) while we wait, take the child along:
    // the calling thread blocks below until the child is reaped, so the parent-death signal
    // (sent when the spawning *thread* exits) cannot fire early.
    // SAFETY: prctl is async-signal-safe and touches only the child's own attributes.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let what = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {what}: {e}")))?;

    // Feed stdin and drain both pipes on threads so a chatty child cannot deadlock us.
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let data = data.to_vec();
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let out_rx = drain(child.stdout.take());
    let err_rx = drain(child.stderr.take());

    let status = wait_bounded(&mut child, timeout);
    // Pipes close when the child exits, unless it left a grandchild holding them: bounded.
    let stdout = out_rx
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    let stderr = err_rx
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{what} did not finish within {timeout:?}; killed it\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            ),
        )),
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// Waits up to `timeout` for `child`; on timeout kills it (SIGKILL to its PID), reaps it and
/// returns None.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Stops a child process by PID: SIGTERM, up to `grace` to exit, then SIGKILL; always reaps.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a PID we spawned and have not reaped yet (so not reused).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    wait_bounded(child, grace);
}

/// Runs a helper command (bounded by [`CMD_TIMEOUT`]); panics if it cannot be started or
/// times out. Does not check the exit code.
pub fn run_cmd(cmd: Command, stdin: Option<&[u8]>) -> Output {
    run_with_timeout(cmd, stdin, CMD_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a helper command and panics with its output unless it exits 0.
pub fn run_ok(cmd: Command, stdin: Option<&[u8]>) -> Output {
    let what = format!("{cmd:?}");
    let out = run_cmd(cmd, stdin);
    assert!(out.status.success(), "{what} failed:\n{}", show(&out));
    out
}

// ---------------------------------------------------------------------------------------------
// Output formatting

/// Stdout as (lossy) UTF-8.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr as (lossy) UTF-8.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The handle of the first rule of chain `input` of table `inet pbxwall` in namespace `ns`
/// whose `nft -a list` line contains `needle` (to change it behind pbxwall's back).
pub fn rule_handle(ns: &str, needle: &str) -> String {
    let out = ns_cmd(
        ns,
        "nft",
        &["-a", "list", "chain", "inet", "pbxwall", "input"],
    );
    stdout(&out)
        .lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.rsplit("# handle ").next())
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| panic!("no rule with {needle:?} in {ns}: {}", show(&out)))
}

/// Every file under `dir` (recursively), by path relative to `dir`, with its bytes: compare
/// two snapshots to prove a command changed nothing.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

/// Exit code and both streams, for assertion messages.
pub fn show(out: &Output) -> String {
    use std::os::unix::process::ExitStatusExt;
    let code = match (out.status.code(), out.status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "no exit code".to_string(),
    };
    format!(
        "{code}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
        with_newline(stdout(out)),
        with_newline(stderr(out))
    )
}

fn with_newline(mut s: String) -> String {
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// A bad command line and what it must give: the exit code and a text its one error line
/// contains. Tables of them (`const CASES: &[Case]`) drive the bad-input tests.
pub struct Case {
    /// The arguments (the binary first, or a `pbxwall` subcommand first: each test says).
    pub args: &'static [&'static str],
    /// The exit code.
    pub code: i32,
    /// What the one error line must contain.
    pub error: &'static str,
}

/// A [`Case`], short enough for one table row.
pub const fn case(args: &'static [&'static str], code: i32, error: &'static str) -> Case {
    Case { args, code, error }
}

/// Panics with [`show`] unless the process exited with `code`.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit code {code}, got:\n{}",
        show(out)
    );
}

// ---------------------------------------------------------------------------------------------
// The package's binaries and a throwaway configuration

/// Path of binary `name` of this package. `cargo test` builds every binary before it runs
/// integration tests and puts them in `target/<profile>/`, next to `deps/` where the test
/// executable lives.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test executable has a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps has a parent");
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        is_executable(&path),
        "binary {name} not found at {} (binaries are built by `cargo test`)",
        path.display()
    );
    path
}

/// Environment variables removed from every binary run: the SSH lock-out check of `restart`
/// must not see the developer's own SSH session.
pub const SCRUBBED_ENV: [&str; 3] = ["SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY"];

/// A temporary directory with `config/` and `state/` for `PBXWALL_CONFIG_DIR` and
/// `PBXWALL_STATE_DIR`; removed on drop.
pub struct TempConfig {
    dir: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
}

impl Default for TempConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl TempConfig {
    pub fn new() -> TempConfig {
        let dir = tempfile::Builder::new()
            .prefix("pbxw-test-")
            .tempdir()
            .expect("create temp dir");
        let config = dir.path().join("config");
        let state = dir.path().join("state");
        std::fs::create_dir(&config).expect("create config dir");
        std::fs::create_dir(&state).expect("create state dir");
        TempConfig { dir, config, state }
    }

    /// The temporary directory holding `config/` and `state/`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_dir(&self) -> &Path {
        &self.config
    }

    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// Writes `contents` to `rel` under the config dir (e.g. `"pbxwall.toml"`,
    /// `"accounts/joe.toml"`), creating folders; returns the full path.
    pub fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let path = self.config.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create config subdir");
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Reads `rel` under the config dir, None if it does not exist.
    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.config.join(rel)).ok()
    }

    /// The command that runs `program` with this configuration (through
    /// `ip netns exec NS` when `ns` is given), stdin closed, env scrubbed.
    pub fn command<I, S>(&self, ns: Option<&str>, program: &Path, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new(tool_path("ip"));
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .env("PBXWALL_CONFIG_DIR", &self.config)
            .env("PBXWALL_STATE_DIR", &self.state);
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs this package's binary `bin_name` (see [`bin`]) with `args`, in namespace `ns` if
    /// given, bounded by [`RUN_TIMEOUT`]; returns its output whatever the exit code.
    pub fn run<I, S>(&self, ns: Option<&str>, bin_name: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_program(ns, &bin(bin_name), args, &[])
    }

    /// Like [`TempConfig::run`] with extra environment variables.
    pub fn run_env<I, S>(
        &self,
        ns: Option<&str>,
        bin_name: &str,
        args: I,
        env: &[(&str, &str)],
    ) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_program(ns, &bin(bin_name), args, env)
    }

    /// Runs any program with this configuration's environment (for tests of the harness, or
    /// of scripts).
    pub fn run_program<I, S>(
        &self,
        ns: Option<&str>,
        program: &Path,
        args: I,
        env: &[(&str, &str)],
    ) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(ns, program, args);
        cmd.envs(env.iter().copied());
        run_with_timeout(cmd, None, RUN_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    }
}
