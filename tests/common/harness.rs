//! The test runner of every integration test binary, and its one rule for tests this machine
//! cannot run.
//!
//! Each file under `tests/` is a `harness = false` target (Cargo.toml) whose `main` is made by
//! [`test_main!`](crate::common::test_main), listing every test function under what it needs:
//!
//! ```ignore
//! common::test_main! {
//!     Needs::NOTHING => [bad_names_are_refused, help_lists_every_command],
//!     Needs::ROOT => [accounts_reach_exactly_their_services],
//!     Needs::root_and(&["dnsmasq"]) => [a_moving_name_is_followed],
//! }
//! ```
//!
//! The rule, decided for each test before any test runs ([`decide`]):
//! - its [`Needs`] are met (euid 0 and `ip`/`nft` for a root test, every extra program found,
//!   its own check passed): the test runs;
//! - they are not: the test is reported as **ignored**, never as passed, and a
//!   `SKIPPED <test>: <why>` line goes to stderr. With `PBXWALL_TESTS_REQUIRE_ROOT=1` (CI sets
//!   it) it is reported as **failed** instead, with the same reason;
//! - a test behind an opt-in switch (the slow .deb test: `PBXWALL_SLOW_TESTS=1`) is ignored
//!   while the switch is off, CI or not.
//!
//! A test that cannot run but is run anyway (`--include-ignored`, `--ignored`) fails with the
//! reason: it is never counted as passed without having run.
//!
//! Why not libtest: its `#[ignore]` is fixed when the test binary is compiled, and a test that
//! returns early is counted as passed. libtest-mimic takes the ignored flag of each test at
//! run time and prints libtest's lines (`test NAME ... ignored`, and the summary
//! `test result: ok. N passed; M failed; K ignored; ...` that `.ci/run` adds up). It takes
//! libtest's options: a name filter, `--exact`, `--skip`, `--include-ignored`, `--ignored`,
//! `--test-threads` (or `RUST_TEST_THREADS`), `--list`. Two differences: it captures no output
//! (`--nocapture` is accepted and changes nothing: what a test prints shows at once), and it
//! takes one name filter, not several. Each test runs on a thread of its own named after it,
//! as under libtest, so a panic message names the test.

use std::io::{self, Write};
use std::process::ExitCode;
use std::thread;

use libtest_mimic::{Arguments, Failed, Trial};

use super::{REQUIRE_ROOT_ENV, ROOT_TOOLS, missing_tools, tool};

/// What a test needs from the machine before it can run.
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    /// euid 0 and the programs of [`ROOT_TOOLS`] (`ip`, `nft`): network namespaces and
    /// nf_tables.
    pub root: bool,
    /// Other programs the test runs, found by [`tool`] (e.g. `dnsmasq`, `setpriv`).
    pub tools: &'static [&'static str],
    /// An environment switch the test waits for: without it the test is ignored, also under
    /// `PBXWALL_TESTS_REQUIRE_ROOT`.
    pub opt_in: Option<OptIn>,
    /// Any other condition: `Err(why)` when this machine does not meet it.
    pub check: Option<fn() -> Result<(), String>>,
}

/// An environment switch that lets a test run (slow tests).
#[derive(Clone, Copy, Debug)]
pub struct OptIn {
    /// The variable; the switch is on when its value is `1`.
    pub var: &'static str,
    /// The SKIPPED reason while it is off: what the test costs and how to turn it on.
    pub why: &'static str,
}

impl Needs {
    /// Runs anywhere.
    pub const NOTHING: Needs = Needs {
        root: false,
        tools: &[],
        opt_in: None,
        check: None,
    };

    /// Root, `ip` and `nft`.
    pub const ROOT: Needs = Needs {
        root: true,
        ..Needs::NOTHING
    };

    /// Root, `ip`, `nft` and the programs `tools`.
    pub const fn root_and(tools: &'static [&'static str]) -> Needs {
        Needs {
            tools,
            ..Needs::ROOT
        }
    }

    /// The programs `tools`, no root.
    pub const fn tools(tools: &'static [&'static str]) -> Needs {
        Needs {
            tools,
            ..Needs::NOTHING
        }
    }

    /// These needs, and the switch `var=1` (see [`OptIn`]).
    pub const fn with_opt_in(self, var: &'static str, why: &'static str) -> Needs {
        Needs {
            opt_in: Some(OptIn { var, why }),
            ..self
        }
    }

    /// These needs, and `check` passing.
    pub const fn with_check(self, check: fn() -> Result<(), String>) -> Needs {
        Needs {
            check: Some(check),
            ..self
        }
    }

    /// The programs to look for: `ip` and `nft` for a root test, then [`Needs::tools`].
    pub fn programs(&self) -> Vec<&'static str> {
        let root_tools: &[&'static str] = if self.root { &ROOT_TOOLS } else { &[] };
        root_tools.iter().chain(self.tools).copied().collect()
    }
}

/// What this machine and this run offer, as far as one test's [`Needs`] ask: the inputs of
/// [`decide`], gathered by [`Facts::of`] or written by hand in the harness's own tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The effective user id.
    pub euid: u32,
    /// The programs of [`Needs::programs`] that [`tool`] cannot find.
    pub missing_tools: Vec<String>,
    /// Whether the opt-in switch is on (true for a test without one).
    pub opted_in: bool,
    /// What [`Needs::check`] returned (`Ok` for a test without one).
    pub check: Result<(), String>,
    /// `PBXWALL_TESTS_REQUIRE_ROOT` is set: a test that cannot run fails.
    pub require_all: bool,
}

impl Facts {
    /// Looks at this machine and the environment for `needs`.
    pub fn of(needs: &Needs) -> Facts {
        Facts {
            euid: euid(),
            missing_tools: missing_tools(&needs.programs())
                .into_iter()
                .map(str::to_owned)
                .collect(),
            opted_in: needs
                .opt_in
                .is_none_or(|o| std::env::var_os(o.var).is_some_and(|v| v == "1")),
            check: needs.check.map_or(Ok(()), |check| check()),
            require_all: require_all(),
        }
    }
}

/// What happens to one test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Its needs are met: it runs.
    Run,
    /// It cannot run here: reported as ignored, with this reason on a SKIPPED line.
    Ignore(String),
    /// It cannot run here and `PBXWALL_TESTS_REQUIRE_ROOT` is set: reported as failed, with
    /// this reason.
    Fail(String),
}

/// The skip rule: whether a test with `needs` runs, is ignored, or fails, given `facts`.
pub fn decide(needs: &Needs, facts: &Facts) -> Decision {
    if let Some(opt_in) = needs.opt_in
        && !facts.opted_in
    {
        return Decision::Ignore(opt_in.why.to_owned());
    }
    let mut why = Vec::new();
    if needs.root && facts.euid != 0 {
        why.push(format!("euid is {}", facts.euid));
    }
    if !facts.missing_tools.is_empty() {
        why.push(format!("not found: {}", facts.missing_tools.join(", ")));
    }
    if let Err(e) = &facts.check {
        why.push(e.clone());
    }
    if why.is_empty() {
        return Decision::Run;
    }
    let mut what = Vec::new();
    if needs.root {
        what.push("root and ip/nft (run as root)".to_owned());
    }
    if !needs.tools.is_empty() {
        what.push(needs.tools.join(", "));
    }
    let reason = if what.is_empty() {
        why.join("; ")
    } else {
        format!("needs {} [{}]", what.join(" and "), why.join("; "))
    };
    if facts.require_all {
        Decision::Fail(format!("{reason}; {REQUIRE_ROOT_ENV} is set"))
    } else {
        Decision::Ignore(reason)
    }
}

/// The line printed for an ignored test: `SKIPPED <test>: <reason>`.
pub fn skip_line(test: &str, reason: &str) -> String {
    format!("SKIPPED {test}: {reason}")
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    euid() == 0
}

/// Whether `PBXWALL_TESTS_REQUIRE_ROOT` is set to a value other than empty or `0`.
pub fn require_all() -> bool {
    std::env::var(REQUIRE_ROOT_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// One test function of a binary, as [`test_main!`](crate::common::test_main) lists it.
#[derive(Clone, Copy, Debug)]
pub struct TestFn {
    /// The function's name, which is the test's name.
    pub name: &'static str,
    /// What it needs to run.
    pub needs: Needs,
    /// The test itself: it passes unless it panics.
    pub body: fn(),
}

/// The libtest-mimic trial of test `name`: ignored when `decision` says so; when run, `body`
/// on a thread of its own named `name`, or (a test that cannot run here) a failure with the
/// reason.
pub fn trial(name: &'static str, decision: Decision, body: fn()) -> Trial {
    let ignored = matches!(decision, Decision::Ignore(_));
    Trial::test(name, move || match decision {
        Decision::Run => run_on_own_thread(name, body),
        Decision::Ignore(reason) | Decision::Fail(reason) => {
            Err(format!("cannot run here: {reason}").into())
        }
    })
    .with_ignored_flag(ignored)
}

/// Runs `body` on a new thread named `name` (as libtest does, so the panic message names the
/// test); a panic is passed on to libtest-mimic, which reports the test as failed with the
/// panic's message.
fn run_on_own_thread(name: &str, body: fn()) -> Result<(), Failed> {
    let handle = thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map_err(|e| format!("cannot start the test's thread: {e}"))?;
    match handle.join() {
        Ok(()) => Ok(()),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Whether the command line selects test `name` (its filter and `--skip`s, as libtest-mimic
/// applies them): only selected tests print a SKIPPED line.
pub fn selected(args: &Arguments, name: &str) -> bool {
    let matches = |pattern: &String| {
        if args.exact {
            name == pattern
        } else {
            name.contains(pattern.as_str())
        }
    };
    args.filter.as_ref().is_none_or(matches) && !args.skip.iter().any(matches)
}

/// The `main` of a test binary: parses libtest's options, decides each test's fate with
/// [`decide`], prints the SKIPPED lines, runs the tests (in order of name, as libtest does)
/// and returns libtest's exit code (101 when a test failed).
pub fn run_tests(mut tests: Vec<TestFn>) -> ExitCode {
    // libtest's order: by name.
    tests.sort_by_key(|t| t.name);
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|n| n.parse().ok());
    }
    let run_ignored = args.include_ignored || args.ignored;
    let trials = tests
        .into_iter()
        .map(|t| {
            let decision = decide(&t.needs, &Facts::of(&t.needs));
            if let Decision::Ignore(reason) = &decision
                && !args.list
                && !run_ignored
                && selected(&args, t.name)
            {
                // Unbuffered stderr, so the line is seen before the test results.
                let _ = writeln!(io::stderr(), "{}", skip_line(t.name, reason));
            }
            trial(t.name, decision, t.body)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// Defines `main` for a test binary: the test functions, grouped under the [`Needs`] they
/// share. Every test function of the file must be listed (an unlisted one is dead code, which
/// the lint refuses).
///
/// ```ignore
/// common::test_main! {
///     Needs::NOTHING => [parses, refuses],
///     Needs::ROOT => [applies],
/// }
/// ```
macro_rules! test_main {
    ($($needs:expr => [$($test:ident),* $(,)?]),* $(,)?) => {
        fn main() -> ::std::process::ExitCode {
            $crate::common::harness::run_tests(::std::vec![
                $($(
                    $crate::common::harness::TestFn {
                        name: ::std::stringify!($test),
                        needs: $needs,
                        body: $test,
                    },
                )*)*
            ])
        }
    };
}
pub(crate) use test_main;
