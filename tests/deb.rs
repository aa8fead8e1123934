//! The Debian package, end to end: `make deb`, then install it into a clean Debian 12 root
//! made with debootstrap (from the mirror this machine's apt uses) with `apt-get install
//! ./pbxwall_*.deb`, so its dependencies, conffiles and maintainer scripts are exercised,
//! and run the installed commands there through chroot. Purging it at the end must leave
//! no state behind.
//!
//! Slow (a release build, a debootstrap, an apt install: about 6 minutes) and needs root,
//! so it runs only with `PBXWALL_SLOW_TESTS=1` (`make test-slow`); without it, as root or
//! not, CI or not, `cargo test` reports it as ignored with a SKIPPED line saying why.
//!
//! When debootstrap cannot reach the mirror (or `PBXWALL_DEB_NO_DEBOOTSTRAP=1`: no
//! debootstrap, no network), the test falls back to a minimal root: `sh`, the few programs
//! the maintainer scripts run and the shared libraries `ldd` names, with the package
//! installed and purged by the host's `dpkg --root --force-depends`. That checks the
//! conffiles, the maintainer scripts (purge included) and that the binaries run from the
//! package's paths, but not the dependencies, apt or unit enabling, and the test says so
//! loudly.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::Needs;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check(cmd: &mut Command, limit: Duration) -> String {
    let out = common::run_to_files(cmd, limit);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The URL of the Debian archive apt uses for bookworm, from /etc/apt/sources.list*
/// (one-line and deb822 formats).
fn apt_mirror() -> Option<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| Some(e.ok()?.path())).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(body) = std::fs::read_to_string(&file) else {
            continue;
        };
        if file.extension().is_some_and(|e| e == "sources") {
            for stanza in body.split("\n\n") {
                let field = |name: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                        .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                        .unwrap_or_default()
                };
                if field("Types").iter().any(|t| t == "deb")
                    && field("Suites").iter().any(|s| s == "bookworm")
                    && let Some(uri) = field("URIs").first()
                {
                    return Some(uri.clone());
                }
            }
        } else {
            for line in body.lines() {
                let words: Vec<&str> = line
                    .split_whitespace()
                    .filter(|w| !w.starts_with('[') && !w.ends_with(']'))
                    .collect();
                if words.len() >= 3 && words[0] == "deb" && words[2] == "bookworm" {
                    return Some(words[1].to_owned());
                }
            }
        }
    }
    None
}

fn ensure_tool(tool: &str, package: &str) {
    if Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return;
    }
    eprintln!("{tool} missing: apt-get install {package}");
    check(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        Duration::from_secs(600),
    );
}

/// A root file system in a temp folder; unmounts what was mounted in it before removing it.
struct Chroot {
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
}

impl Chroot {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn mount_proc(&mut self) {
        let target = self.path().join("proc");
        std::fs::create_dir_all(&target).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(&target)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            self.mounts.push(target);
        } else {
            eprintln!("NOTE: could not mount /proc in the chroot; going on without it");
        }
    }

    /// `chroot ROOT sh -c SCRIPT` with a clean environment.
    fn sh(&self, script: &str, limit: Duration) -> Output {
        common::run_to_files(
            Command::new("chroot")
                .arg(self.path())
                .args(["/bin/sh", "-c", script])
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("LANG", "C.UTF-8")
                .env("DEBIAN_FRONTEND", "noninteractive"),
            limit,
        )
    }

    fn sh_ok(&self, script: &str, limit: Duration) -> String {
        let out = self.sh(script, limit);
        assert!(
            out.status.success(),
            "in the chroot, {script:?} failed ({}):\n{}\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// Files (not folders) in a .deb, without the leading `./`.
fn deb_files(deb: &Path) -> Vec<String> {
    let list = check(
        Command::new("dpkg-deb").arg("--contents").arg(deb),
        Duration::from_secs(60),
    );
    let mut files: Vec<String> = list
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches("./").to_owned())
        .collect();
    files.sort();
    files
}

/// Files under the staged install tree, as the .deb should hold them (man pages gzipped,
/// plus the copyright file cargo-deb writes).
fn staged_files(stage: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                if rel.starts_with("usr/share/man/") {
                    out.push(format!("{rel}.gz"));
                } else {
                    out.push(rel);
                }
            }
        }
    }
    let mut out = vec!["usr/share/doc/pbxwall/copyright".to_owned()];
    walk(stage, stage, &mut out);
    out.sort();
    out
}

fn bins_in(deb_list: &[String]) -> Vec<String> {
    deb_list
        .iter()
        .filter_map(|f| f.strip_prefix("usr/sbin/"))
        .map(str::to_owned)
        .collect()
}

/// Debian 12 minbase from the mirror; `None` when debootstrap fails (no mirror reachable).
fn debootstrap(mirror: &str) -> Option<Chroot> {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tempfile::Builder::new()
        .prefix("pbxwall-deb-root-")
        .tempdir_in(&base)
        .unwrap();
    eprintln!(
        "debootstrap bookworm (minbase) from {mirror} into {}",
        dir.path().display()
    );
    let out = common::run_to_files(
        Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(dir.path())
            .arg(mirror),
        Duration::from_secs(1200),
    );
    if !out.status.success() {
        eprintln!(
            "debootstrap failed ({}):\n{}\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        return None;
    }
    Some(Chroot {
        dir,
        mounts: Vec::new(),
    })
}

/// The fallback: a root holding only `sh`, the few programs the maintainer scripts call
/// and the shared libraries of those and of the package's binaries, with the package
/// installed by the host's `dpkg --root` (which runs the maintainer scripts chrooted there;
/// `--force-depends`, as the root has no libc6 package). So conffiles and maintainer
/// scripts are tested; the dependencies and apt are not, nor unit enabling (no
/// deb-systemd-helper there).
fn dpkg_root(deb: &Path) -> Chroot {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tempfile::Builder::new()
        .prefix("pbxwall-dpkg-root-")
        .tempdir_in(&base)
        .unwrap();
    let r = dir.path();
    for d in [
        "tmp",
        "dev",
        "etc/cron.d",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(r.join("var/lib/dpkg/available"), "").unwrap();
    // The maintainer scripts write to /dev/null.
    check(
        Command::new("mknod")
            .args(["-m", "666"])
            .arg(r.join("dev/null"))
            .args(["c", "1", "3"]),
        Duration::from_secs(10),
    );
    // sh and what the scripts run (dash has test and echo built in), and the libraries of
    // those and of the package's binaries (unpacked aside for ldd).
    let unpacked = tempfile::tempdir_in(&base).unwrap();
    check(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(unpacked.path()),
        Duration::from_secs(60),
    );
    let tools: Vec<PathBuf> = ["sh", "head", "rm", "rmdir", "mkdir"]
        .iter()
        .map(|t| {
            ["/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(t))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("no {t} in /usr/bin or /bin"))
        })
        .collect();
    let mut programs: Vec<PathBuf> = std::fs::read_dir(unpacked.path().join("usr/sbin"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    programs.extend(tools.iter().cloned());
    let mut files = std::collections::BTreeSet::new();
    for program in &programs {
        let out = check(Command::new("ldd").arg(program), Duration::from_secs(30));
        for word in out.split_whitespace() {
            if word.starts_with('/') {
                files.insert(PathBuf::from(word));
            }
        }
    }
    for tool in &tools {
        // At /bin/NAME, where the scripts' PATH finds it (usr-merged or not).
        files.insert(Path::new("/bin").join(tool.file_name().unwrap()));
    }
    for file in &files {
        let real = std::fs::canonicalize(file).unwrap();
        let dest = r.join(file.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&real, &dest).unwrap();
    }
    Chroot {
        dir,
        mounts: Vec::new(),
    }
}

/// `dpkg --root=ROOT ARGS` on the host.
fn dpkg_in(root: &Path, args: &[&str]) -> String {
    check(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        Duration::from_secs(300),
    )
}

fn deb_installs_and_runs_in_a_clean_debian_12() {
    ensure_tool("dpkg-shlibdeps", "dpkg-dev");
    // PBXWALL_DEB_NO_DEBOOTSTRAP=1: straight to the fallback (no debootstrap, no mirror).
    let no_debootstrap = std::env::var_os("PBXWALL_DEB_NO_DEBOOTSTRAP").is_some_and(|v| v == "1");
    if !no_debootstrap {
        ensure_tool("debootstrap", "debootstrap");
    }

    // 1. The package, from the staged `make install PREFIX=/usr`.
    check(
        Command::new("make")
            .arg("--no-print-directory")
            .arg("-C")
            .arg(root())
            .arg("deb")
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS"),
        Duration::from_secs(40 * 60),
    );
    let version = env!("CARGO_PKG_VERSION");
    // cargo-deb writes to the target folder (CARGO_TARGET_DIR, when set), whose tmp/ this
    // test was given.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let deb = std::fs::read_dir(target_dir.join("debian"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("pbxwall_{version}-"))
                && p.extension().is_some_and(|e| e == "deb")
        })
        .expect("make deb made target/debian/pbxwall_VERSION-*.deb");
    let files = deb_files(&deb);
    assert_eq!(
        files,
        staged_files(&root().join("target/deb-root")),
        "the .deb holds something else than `make install PREFIX=/usr` staged"
    );
    let fields = check(
        Command::new("dpkg-deb").args(["--field"]).arg(&deb),
        Duration::from_secs(30),
    );
    assert!(
        fields.contains("Depends: ") && fields.contains("nftables"),
        "{fields}"
    );
    // fail2ban is optional: the package ships its action, pbxwall works without it.
    assert!(fields.contains("\nSuggests: fail2ban\n"), "{fields}");
    assert!(!fields.contains("Recommends:"), "{fields}");
    for f in [
        "etc/fail2ban/action.d/pbxwall.conf",
        "etc/fail2ban/jail.d/pbxwall.conf.example",
        "usr/lib/systemd/system/pbxwall-sync.service",
        "usr/lib/systemd/system/pbxwall-sync.timer",
        "usr/share/man/man8/pbxwall-sync.8.gz",
    ] {
        assert!(files.iter().any(|x| x == f), "the .deb lacks {f}");
    }
    let bins = bins_in(&files);
    assert!(bins.iter().any(|b| b == "restart"), "{bins:?}");

    // 2. A clean Debian 12, or the loud fallback.
    let booted = if no_debootstrap {
        eprintln!("PBXWALL_DEB_NO_DEBOOTSTRAP=1: no debootstrap");
        None
    } else {
        let mirror = apt_mirror().expect("no bookworm source in /etc/apt/sources.list*");
        debootstrap(&mirror)
    };
    let (mut chroot, full) = match booted {
        Some(c) => (c, true),
        None => {
            eprintln!(
                "\n!!!!!!!! FALLBACK: no debootstrapped Debian 12 root.\n!!!!!!!! Testing in \
                 a minimal root with the host's dpkg --root --force-depends instead:\n\
                 !!!!!!!! conffiles and maintainer scripts are tested; the package's \
                 dependencies, apt and unit enabling are NOT.\n"
            );
            (dpkg_root(&deb), false)
        }
    };
    chroot.mount_proc();
    let minute = Duration::from_secs(60);

    // 3. Install it the way an administrator would: apt resolves its dependencies.
    if full {
        let _ = std::fs::copy("/etc/resolv.conf", chroot.path().join("etc/resolv.conf"));
        std::fs::copy(&deb, chroot.path().join("tmp/pbxwall.deb")).unwrap();
        chroot.sh_ok("apt-get update -qq", 10 * minute);
        chroot.sh_ok(
            "apt-get install -y -qq --no-install-recommends /tmp/pbxwall.deb",
            15 * minute,
        );
        let conffiles = chroot.sh_ok("dpkg-query -W -f='${Conffiles}' pbxwall", minute);
        for f in [
            "/etc/pbxwall/pbxwall.toml",
            "/etc/fail2ban/action.d/pbxwall.conf",
            "/etc/fail2ban/jail.d/pbxwall.conf.example",
        ] {
            assert!(conffiles.contains(f), "{f} is no conffile: {conffiles}");
        }
        chroot.sh_ok(
            "test -d /etc/pbxwall/accounts && test -d /etc/pbxwall/profiles",
            minute,
        );
        chroot.sh_ok("test -x /usr/sbin/nft", minute);
        let helper = chroot.sh("test -x /usr/bin/deb-systemd-helper", minute);
        if helper.status.success() {
            chroot.sh_ok(
                "test -L /etc/systemd/system/sysinit.target.wants/pbxwall.service && \
                 test -L /etc/systemd/system/multi-user.target.wants/pbxwall-restart.service && \
                 test -L /etc/systemd/system/timers.target.wants/pbxwall-ipchecker.timer && \
                 ! test -e /etc/systemd/system/timers.target.wants/pbxwall-sync.timer",
                minute,
            );
        } else {
            eprintln!("NOTE: no deb-systemd-helper in minbase; unit enabling not checked");
        }
    } else {
        dpkg_in(
            chroot.path(),
            &["--force-depends", "-i", &deb.display().to_string()],
        );
        let admindir = chroot.path().join("var/lib/dpkg");
        let conffiles = check(
            Command::new("dpkg-query")
                .arg(format!("--admindir={}", admindir.display()))
                .args(["-W", "-f=${Conffiles}", "pbxwall"]),
            minute,
        );
        for f in [
            "/etc/pbxwall/pbxwall.toml",
            "/etc/fail2ban/action.d/pbxwall.conf",
            "/etc/fail2ban/jail.d/pbxwall.conf.example",
        ] {
            assert!(conffiles.contains(f), "{f} is no conffile: {conffiles}");
        }
        chroot.sh_ok(
            "test -d /etc/pbxwall/accounts && test -d /etc/pbxwall/profiles",
            minute,
        );
    }

    // 4. The commands run from the package's paths.
    for b in &bins {
        let out = chroot.sh(&format!("/usr/sbin/{b} --version"), minute);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{b} --version in the chroot: {}\n{stdout}{}",
            out.status,
            text(&out.stderr)
        );
        if !stdout.contains(version) {
            eprintln!("NOTE: {b} --version printed {stdout:?}");
        }
    }
    let dry = chroot.sh_ok("/usr/sbin/restart --dry-run --state-dir /tmp/state", minute);
    assert!(dry.contains("table inet pbxwall {"), "{dry}");
    chroot.sh_ok(
        "/usr/sbin/add-ip joe 203.0.113.7 --allow sip-udp --no-restart \
         --state-dir /tmp/state",
        minute,
    );
    let dry = chroot.sh_ok(
        "/usr/sbin/pbxwall --state-dir /tmp/state restart --dry-run",
        minute,
    );
    assert!(dry.contains("203.0.113.7"), "{dry}");
    chroot.sh_ok("test -f /usr/share/man/man8/restart.8.gz", minute);
    chroot.sh_ok("test -f /usr/share/pbxwall/profiles/sip-udp.toml", minute);

    // 5. Purge leaves no state, no cron file, no fleet bundle and no package files (the
    //    account file the admin wrote stays).
    {
        chroot.sh_ok(
            "mkdir -p /var/lib/pbxwall && : > /var/lib/pbxwall/x",
            minute,
        );
        chroot.sh_ok(
            "mkdir -p /etc/cron.d && /usr/sbin/ipchecker --install-cron '*/5 * * * *' && \
             /usr/sbin/pbxwall sync --install-cron '*/15 * * * *'",
            minute,
        );
        // What `pbxwall sync` stores (the file names are the contract of src/fleet.rs).
        chroot.sh_ok(
            "mkdir -p /etc/pbxwall/fleet && echo '{}' > /etc/pbxwall/fleet/bundle.json && \
             echo sig > /etc/pbxwall/fleet/bundle.json.minisig",
            minute,
        );
        if full {
            chroot.sh_ok("dpkg --purge pbxwall", 5 * minute);
        } else {
            dpkg_in(chroot.path(), &["--purge", "pbxwall"]);
        }
        chroot.sh_ok(
            "! test -e /var/lib/pbxwall && ! test -e /usr/sbin/restart && \
             ! test -e /etc/cron.d/pbxwall && ! test -e /etc/cron.d/pbxwall-sync && \
             ! test -e /etc/pbxwall/fleet && ! test -e /etc/fail2ban/action.d/pbxwall.conf && \
             ! test -e /etc/fail2ban/jail.d/pbxwall.conf.example && \
             test -f /etc/pbxwall/accounts/joe.toml && ! test -e /etc/pbxwall/pbxwall.toml",
            minute,
        );
    }
    eprintln!(
        "deb test done in a {} root",
        if full {
            "debootstrapped Debian 12"
        } else {
            "FALLBACK minimal (dpkg --root)"
        }
    );
}

common::test_main! {
    // Ignored in every ordinary `cargo test` (as root too: it is slow).
    Needs::ROOT.with_opt_in(
        "PBXWALL_SLOW_TESTS",
        "slow (release build, debootstrap); run `make test-slow` or set PBXWALL_SLOW_TESTS=1",
    ) => [deb_installs_and_runs_in_a_clean_debian_12],
}
