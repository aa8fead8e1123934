//! `make install` / `make uninstall` into a throwaway DESTDIR, with the binaries cargo has
//! already built for these tests (no release build, no root), and `systemd-analyze verify`
//! of the installed units.
//!
//! The expected file list is built from the same sources the Makefile reads (Cargo.toml's
//! `[[bin]]` list, `profiles/`, `providers.toml`) and from src/manpages.rs (man pages and
//! completions), so a new binary or page is expected automatically; anything else that
//! appears, or goes missing, fails the test. The .deb is built from this same staged tree
//! (`make deb`), so this list is also the package's.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pbxwall::manpages;

use common::Needs;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The folder cargo built this package's binaries into for these tests.
fn built_bins() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_pbxwall"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn check(cmd: &mut Command, limit: Duration) -> String {
    let out = common::run_to_files(cmd, limit);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `make -C <repo> TARGET VARS...` with the completions written by the library itself, so
/// make runs no cargo at all.
fn make(target: &str, destdir: &Path, completions: &Path, extra: &[&str]) -> String {
    let mut cmd = Command::new("make");
    cmd.arg("--no-print-directory")
        .arg("-C")
        .arg(root())
        .arg(target)
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg("PREFIX=/usr")
        .arg(format!("BINDIR_SRC={}", built_bins().display()))
        .arg(format!("COMPLETIONS_DIR={}", completions.display()))
        .args(extra)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS");
    check(&mut cmd, Duration::from_secs(60))
}

/// A DESTDIR with `make install PREFIX=/usr` done in it.
struct Installed {
    tmp: tempfile::TempDir,
}

impl Installed {
    fn new() -> Installed {
        let tmp = tempfile::tempdir().unwrap();
        manpages::write_completions(&tmp.path().join("completions")).unwrap();
        std::fs::create_dir(tmp.path().join("root")).unwrap();
        let me = Installed { tmp };
        make("install", &me.dest(), &me.completions(), &[]);
        me
    }
    fn dest(&self) -> PathBuf {
        self.tmp.path().join("root")
    }
    fn completions(&self) -> PathBuf {
        self.tmp.path().join("completions")
    }
}

/// Every file, and every empty folder (with a trailing `/`), under `dir`, relative to it.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let mut empty = true;
        for entry in std::fs::read_dir(dir).unwrap() {
            empty = false;
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
        if empty && dir != base {
            out.insert(format!("{}/", dir.strip_prefix(base).unwrap().display()));
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn cargo_bins() -> Vec<String> {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    manifest["bin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect()
}

const UNITS: [&str; 6] = [
    "pbxwall.service",
    "pbxwall-restart.service",
    "pbxwall-ipchecker.service",
    "pbxwall-ipchecker.timer",
    "pbxwall-sync.service",
    "pbxwall-sync.timer",
];

fn expected_tree() -> BTreeSet<String> {
    let mut want = BTreeSet::new();
    for b in cargo_bins() {
        want.insert(format!("usr/sbin/{b}"));
    }
    for entry in std::fs::read_dir(root().join("profiles")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".toml") {
            want.insert(format!("usr/share/pbxwall/profiles/{name}"));
        }
    }
    if root().join("providers.toml").exists() {
        want.insert("usr/share/pbxwall/providers.toml".into());
    }
    // The man pages point to it (enable-trusted-providers --list --json, among others).
    want.insert("usr/share/doc/pbxwall/README.md".into());
    let pages = manpages::man_pages("")
        .into_iter()
        .map(|g| g.name)
        .chain(manpages::HAND_WRITTEN.iter().map(|s| s.to_string()));
    for page in pages {
        let section = page.rsplit('.').next().unwrap();
        want.insert(format!("usr/share/man/man{section}/{page}"));
    }
    for (shell, g) in manpages::completions() {
        let dir = match shell {
            "bash" => "usr/share/bash-completion/completions",
            "zsh" => "usr/share/zsh/site-functions",
            "fish" => "usr/share/fish/vendor_completions.d",
            other => panic!("no install folder for {other}"),
        };
        want.insert(format!("{dir}/{}", g.name));
    }
    for unit in UNITS {
        want.insert(format!("usr/lib/systemd/system/{unit}"));
    }
    want.insert("etc/pbxwall/pbxwall.toml".into());
    want.insert("etc/fail2ban/action.d/pbxwall.conf".into());
    want.insert("etc/fail2ban/jail.d/pbxwall.conf.example".into());
    want.insert("etc/pbxwall/accounts/".into());
    want.insert("etc/pbxwall/profiles/".into());
    want
}

/// packaging/README.md cites only files the tree has: every repository path it names
/// (`src/manpages.rs`, `tests/deb.rs`, `README.md`, ...; globs are checked by their folder)
/// exists.
fn packaging_notes_cite_files_the_tree_has() {
    let notes = std::fs::read_to_string(root().join("packaging/README.md")).unwrap();
    let mut missing = Vec::new();
    let words = notes.split(|c: char| {
        c.is_whitespace() || matches!(c, '`' | '(' | ')' | '"' | ',' | ';' | ':' | '|')
    });
    for word in words {
        let word = word.trim_end_matches('.').trim_end_matches("'s");
        let is_file = [".md", ".rs", ".toml", ".in", ".sh"]
            .iter()
            .any(|e| word.ends_with(e));
        // Paths on the installed system (/etc/..., $(PREFIX)/...) and bare names of
        // installed files (NAME.toml) are not the repository's.
        if !is_file || word.starts_with('/') || word.contains('$') || word.contains("NAME") {
            continue;
        }
        let path = match word.rsplit_once('/') {
            Some((dir, file)) if file.contains('*') => dir.to_owned(),
            _ => word.to_owned(),
        };
        if !root().join(&path).exists() {
            missing.push(word.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "packaging/README.md cites files the tree does not have: {missing:?}"
    );
}

fn install_puts_exactly_the_expected_files() {
    use std::os::unix::fs::PermissionsExt;

    let inst = Installed::new();
    let dest = inst.dest();
    let got = tree(&dest);
    let want = expected_tree();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "make install: missing {missing:#?}\nunexpected {extra:#?}"
    );

    for f in &got {
        if f.ends_with('/') {
            continue;
        }
        let mode = std::fs::metadata(dest.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        let want_mode = if f.starts_with("usr/sbin/") {
            0o755
        } else {
            0o644
        };
        assert_eq!(mode, want_mode, "{f}: mode {mode:o}");
    }

    // The installed binaries run.
    for b in cargo_bins() {
        let out = common::run_to_files(
            Command::new(dest.join("usr/sbin").join(&b)).arg("--version"),
            Duration::from_secs(10),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout.is_empty() && out.status.success() {
            eprintln!("NOTE: {b} --version printed nothing (not implemented yet?)");
            continue;
        }
        assert!(
            out.status.success() && stdout.contains(env!("CARGO_PKG_VERSION")),
            "{b} --version: {stdout}"
        );
    }

    // Units: every placeholder filled, ExecStart under PREFIX.
    let unit_dir = dest.join("usr/lib/systemd/system");
    for unit in UNITS {
        let text = std::fs::read_to_string(unit_dir.join(unit)).unwrap();
        assert!(
            !text.contains('@'),
            "{unit} has an unfilled @PLACEHOLDER@:\n{text}"
        );
    }
    let restart = std::fs::read_to_string(unit_dir.join("pbxwall-restart.service")).unwrap();
    assert!(
        restart.contains("\nExecStart=/usr/sbin/restart\n"),
        "{restart}"
    );
    let boot = std::fs::read_to_string(unit_dir.join("pbxwall.service")).unwrap();
    assert!(
        boot.contains("\nExecStart=/usr/sbin/nft -f /var/lib/pbxwall/last-applied.nft\n"),
        "{boot}"
    );
    assert!(
        boot.contains("\nExecStop=-/usr/sbin/pbxwall ipchecker --record-only --quiet\n"),
        "{boot}"
    );

    // The shipped settings file is the commented-out one.
    assert_eq!(
        std::fs::read(dest.join("etc/pbxwall/pbxwall.toml")).unwrap(),
        std::fs::read(root().join("packaging/pbxwall.toml")).unwrap()
    );
}

/// The section names of a 64-bit little-endian ELF file (what `readelf -S` lists).
fn elf_section_names(path: &Path) -> Vec<String> {
    let data = std::fs::read(path).unwrap();
    let name = path.display();
    assert!(
        data.len() > 64 && data[..4] == *b"\x7fELF" && data[4] == 2 && data[5] == 1,
        "{name} is not a 64-bit little-endian ELF file"
    );
    let u16_at = |at: usize| u16::from_le_bytes(data[at..at + 2].try_into().unwrap()) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap()) as usize;
    // ELF header: e_shoff at 0x28, e_shentsize 0x3a, e_shnum 0x3c, e_shstrndx 0x3e.
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    // Section header: sh_name at 0, sh_offset at 0x18.
    let strtab = u64_at(shoff + shstrndx * shentsize + 0x18);
    (0..shnum)
        .map(|i| {
            let start = strtab + u32_at(shoff + i * shentsize);
            let end = start + data[start..].iter().position(|&b| b == 0).unwrap();
            String::from_utf8_lossy(&data[start..end]).into_owned()
        })
        .collect()
}

/// `make install` strips the binaries (the release profile keeps debug info for profiling:
/// unstripped, the eight binaries take some 570 MB).
fn install_strips_the_binaries() {
    let inst = Installed::new();
    for b in cargo_bins() {
        let installed = inst.dest().join("usr/sbin").join(&b);
        let sections = elf_section_names(&installed);
        let debug: Vec<&String> = sections
            .iter()
            .filter(|s| {
                [".debug_info", ".debug_line", ".debug_str", ".symtab"].contains(&s.as_str())
            })
            .collect();
        assert!(
            debug.is_empty(),
            "{b} installed unstripped: it has {debug:?}"
        );
        let size = std::fs::metadata(&installed).unwrap().len();
        let built = std::fs::metadata(built_bins().join(&b)).unwrap().len();
        assert!(
            size < built / 2,
            "{b}: installed {size} bytes, built {built}: not stripped?"
        );
    }
}

fn install_keeps_settings_and_uninstall_removes_the_rest() {
    let inst = Installed::new();
    let dest = inst.dest();
    let settings = dest.join("etc/pbxwall/pbxwall.toml");
    std::fs::write(&settings, "trusted = []\n").unwrap();
    std::fs::write(dest.join("etc/pbxwall/accounts/joe.toml"), "x").unwrap();
    // What `ipchecker --install-cron` writes: cron would go on calling the removed binary.
    std::fs::create_dir_all(dest.join("etc/cron.d")).unwrap();
    std::fs::write(dest.join("etc/cron.d/pbxwall"), pbxwall_cron_file()).unwrap();
    // ... and what `pbxwall sync --install-cron` writes.
    std::fs::write(dest.join("etc/cron.d/pbxwall-sync"), sync_cron_file()).unwrap();

    let out = make("install", &dest, &inst.completions(), &[]);
    assert!(out.contains("kept"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&settings).unwrap(),
        "trusted = []\n"
    );

    make("uninstall", &dest, &inst.completions(), &[]);
    let files: Vec<String> = tree(&dest)
        .into_iter()
        .filter(|f| !f.ends_with('/'))
        .collect();
    assert_eq!(
        files,
        ["etc/pbxwall/accounts/joe.toml", "etc/pbxwall/pbxwall.toml"],
        "uninstall must remove everything but the administrator's /etc/pbxwall"
    );
    // On a host without fail2ban, the folders install made for its files go too.
    assert!(
        !dest.join("etc/fail2ban").exists(),
        "uninstall left etc/fail2ban"
    );

    // Cron files of the same names that pbxwall did not write stay.
    let own = "*/5 * * * * root /usr/local/bin/my-own-job\n";
    std::fs::write(dest.join("etc/cron.d/pbxwall"), own).unwrap();
    std::fs::write(dest.join("etc/cron.d/pbxwall-sync"), own).unwrap();
    make("uninstall", &dest, &inst.completions(), &[]);
    for name in ["pbxwall", "pbxwall-sync"] {
        assert_eq!(
            std::fs::read_to_string(dest.join("etc/cron.d").join(name)).unwrap(),
            own,
            "{name}"
        );
    }
}

/// The cron file `ipchecker --install-cron "*/5 * * * *"` writes.
fn pbxwall_cron_file() -> String {
    let schedule = pbxwall::cron::CronSchedule::parse("*/5 * * * *").unwrap();
    pbxwall::cron::cron_file(&schedule, "/usr/sbin/ipchecker").unwrap()
}

/// The cron file `pbxwall sync --install-cron "*/15 * * * *"` writes.
fn sync_cron_file() -> String {
    let schedule = pbxwall::cron::CronSchedule::parse("*/15 * * * *").unwrap();
    pbxwall::cron::sync_cron_file(&schedule, "/usr/sbin/pbxwall sync --quiet").unwrap()
}

/// Runs packaging/debian/postrm with `args` as dpkg would, on the root `dpkg_root`
/// (dpkg's DPKG_ROOT, which the script prefixes to every path).
fn postrm(dpkg_root: &Path, args: &[&str]) {
    check(
        Command::new("sh")
            .arg(root().join("packaging/debian/postrm"))
            .args(args)
            .env("DPKG_ROOT", dpkg_root),
        Duration::from_secs(10),
    );
}

/// `dpkg --purge` removes what pbxwall wrote: the state, the cron files of
/// `ipchecker --install-cron` and `pbxwall sync --install-cron` (only if they are
/// pbxwall's), the fleet bundle `pbxwall sync` stored, empty configuration folders.
/// `remove` (not purge) keeps them all.
fn postrm_purge_removes_the_cron_file_pbxwall_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    for dir in [
        "etc/cron.d",
        "etc/pbxwall/accounts",
        "etc/pbxwall/profiles",
        "etc/pbxwall/fleet",
        "var/lib/pbxwall",
    ] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    std::fs::write(r.join("etc/cron.d/pbxwall"), pbxwall_cron_file()).unwrap();
    std::fs::write(r.join("etc/cron.d/pbxwall-sync"), sync_cron_file()).unwrap();
    std::fs::write(r.join("etc/pbxwall/fleet/bundle.json"), "{}").unwrap();
    std::fs::write(r.join("etc/pbxwall/fleet/bundle.json.minisig"), "sig").unwrap();
    // A temp file a sync killed mid-write left (store::write_atomic's `.NAME.tmp.PID.N`).
    std::fs::write(r.join("etc/pbxwall/fleet/.bundle.json.tmp.1234.0"), "{").unwrap();
    std::fs::write(r.join("var/lib/pbxwall/state.json"), "{}").unwrap();

    postrm(r, &["remove"]);
    for kept in [
        "etc/cron.d/pbxwall",
        "etc/cron.d/pbxwall-sync",
        "etc/pbxwall/fleet/bundle.json",
        "var/lib/pbxwall/state.json",
    ] {
        assert!(r.join(kept).exists(), "remove (not purge) keeps {kept}");
    }

    postrm(r, &["purge"]);
    assert_eq!(
        tree(r),
        BTreeSet::from(["etc/cron.d/".to_string(), "var/lib/".to_string()]),
        "purge must remove the cron files, the state, the fleet bundle and the empty \
         /etc/pbxwall"
    );

    // Somebody else's /etc/cron.d/pbxwall and pbxwall-sync, an account file, and a file
    // the administrator put in fleet/, stay.
    let own = "*/5 * * * * root /usr/local/bin/my-own-job\n";
    std::fs::write(r.join("etc/cron.d/pbxwall"), own).unwrap();
    std::fs::write(r.join("etc/cron.d/pbxwall-sync"), own).unwrap();
    std::fs::create_dir_all(r.join("etc/pbxwall/accounts")).unwrap();
    std::fs::write(r.join("etc/pbxwall/accounts/joe.toml"), "x").unwrap();
    std::fs::create_dir_all(r.join("etc/pbxwall/fleet")).unwrap();
    std::fs::write(r.join("etc/pbxwall/fleet/notes.txt"), "mine").unwrap();
    std::fs::write(r.join("etc/pbxwall/fleet/bundle.json"), "{}").unwrap();
    postrm(r, &["purge"]);
    for name in ["pbxwall", "pbxwall-sync"] {
        assert_eq!(
            std::fs::read_to_string(r.join("etc/cron.d").join(name)).unwrap(),
            own,
            "{name}"
        );
    }
    assert!(r.join("etc/pbxwall/accounts/joe.toml").exists());
    assert!(r.join("etc/pbxwall/fleet/notes.txt").exists());
    assert!(!r.join("etc/pbxwall/fleet/bundle.json").exists());
}

/// postrm and the Makefile recognise pbxwall's cron file by its first line: the same one
/// src/cron.rs writes.
fn cron_marker_is_the_same_everywhere() {
    let marker = pbxwall::cron::CRON_FILE_MARKER;
    assert_eq!(pbxwall_cron_file().lines().next(), Some(marker));
    let postrm = std::fs::read_to_string(root().join("packaging/debian/postrm")).unwrap();
    assert!(
        postrm.contains(&format!("CRON_MARKER='{marker}'\n")),
        "packaging/debian/postrm"
    );
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    let escaped = marker.replacen('#', "\\#", 1);
    assert!(
        makefile.contains(&format!("CRON_MARKER := {escaped}\n")),
        "Makefile"
    );

    // The same for `pbxwall sync --install-cron`'s file.
    let marker = pbxwall::cron::SYNC_CRON_FILE_MARKER;
    assert_eq!(sync_cron_file().lines().next(), Some(marker));
    assert!(
        postrm.contains(&format!("SYNC_CRON_MARKER='{marker}'\n")),
        "packaging/debian/postrm"
    );
    let escaped = marker.replacen('#', "\\#", 1);
    assert!(
        makefile.contains(&format!("SYNC_CRON_MARKER := {escaped}\n")),
        "Makefile"
    );
    // ... and the file names are the commands' defaults.
    assert!(postrm.contains(&format!(
        "\"$DPKG_ROOT{}\"",
        pbxwall::cron::DEFAULT_CRON_FILE
    )));
    assert!(postrm.contains(&format!(
        "\"$DPKG_ROOT{}\"",
        pbxwall::commands::sync::DEFAULT_SYNC_CRON_FILE
    )));
}

fn install_honours_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let completions = tmp.path().join("completions");
    manpages::write_completions(&completions).unwrap();
    let dest = tmp.path().join("root");
    std::fs::create_dir(&dest).unwrap();
    make("install", &dest, &completions, &["PREFIX=/usr/local"]);
    let unit =
        std::fs::read_to_string(dest.join("usr/local/lib/systemd/system/pbxwall-restart.service"))
            .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/sbin/restart\n"),
        "{unit}"
    );
    assert!(
        unit.contains("PBXWALL_SHARE_DIR=/usr/local/share/pbxwall"),
        "{unit}"
    );
    assert!(dest.join("usr/local/sbin/pbxwall").exists());
    // fail2ban's action calls the pbxwall installed under PREFIX.
    let action = std::fs::read_to_string(dest.join("etc/fail2ban/action.d/pbxwall.conf")).unwrap();
    assert!(
        action.contains("\npbxwall = /usr/local/sbin/pbxwall\n"),
        "{action}"
    );
    assert!(dest.join("usr/local/share/man/man8/pbxwall.8").exists());
    assert!(dest.join("etc/pbxwall/pbxwall.toml").exists());
}

/// Where systemd-analyze is installed, if it is.
fn find_systemd_analyze() -> Option<PathBuf> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// What [`units_pass_systemd_analyze_verify`] needs: systemd-analyze installed, or root to
/// install it.
fn systemd_analyze_or_root() -> Result<(), String> {
    if find_systemd_analyze().is_some() || common::is_root() {
        Ok(())
    } else {
        Err("systemd-analyze is not installed (apt-get install systemd)".into())
    }
}

/// systemd-analyze, installed first (as root) when it is missing.
fn systemd_analyze() -> Option<PathBuf> {
    if let Some(p) = find_systemd_analyze() {
        return Some(p);
    }
    if common::is_root() {
        eprintln!("systemd-analyze missing: apt-get install systemd");
        let _ = common::run_to_files(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "systemd"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            Duration::from_secs(300),
        );
    }
    find_systemd_analyze()
}

/// `systemd-analyze verify` checks the units' syntax, their dependencies, that every
/// ExecStart program exists and is executable, and that every Documentation= man page is
/// found. The units say /usr/sbin/restart; this machine has pbxwall only in DESTDIR, so
/// the test verifies copies that point there (nft stays /usr/sbin/nft, a real path).
fn units_pass_systemd_analyze_verify() {
    let analyze = systemd_analyze()
        .expect("systemd-analyze is missing, and `apt-get install systemd` did not install it");
    let inst = Installed::new();
    let dest = inst.dest();
    let sbin = dest.join("usr/sbin");
    let copies = inst.tmp.path().join("units");
    std::fs::create_dir(&copies).unwrap();
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = std::fs::read_to_string(dest.join("usr/lib/systemd/system").join(unit)).unwrap();
        let mut text = text;
        for b in cargo_bins() {
            text = text.replace(
                &format!("/usr/sbin/{b} "),
                &format!("{}/{b} ", sbin.display()),
            );
            text = text.replace(
                &format!("/usr/sbin/{b}\n"),
                &format!("{}/{b}\n", sbin.display()),
            );
        }
        let path = copies.join(unit);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let manpath = dest.join("usr/share/man");
    let out = common::run_to_files(
        Command::new(&analyze)
            .arg("verify")
            .args(&paths)
            .env("MANPATH", &manpath)
            .env("SYSTEMD_LOG_COLOR", "0"),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about the machine rather than our units (no systemd running in a container).
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| UNITS.iter().any(|u| l.contains(u)) || l.contains(&*copies.to_string_lossy()))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify ({}):\n{stderr}",
        out.status
    );
    if !stderr.trim().is_empty() {
        eprintln!("systemd-analyze verify said, about other units:\n{stderr}");
    }
}

common::test_main! {
    Needs::NOTHING => [
        install_honours_prefix,
        install_keeps_settings_and_uninstall_removes_the_rest,
        install_puts_exactly_the_expected_files,
        packaging_notes_cite_files_the_tree_has,
        install_strips_the_binaries,
        postrm_purge_removes_the_cron_file_pbxwall_wrote,
        cron_marker_is_the_same_everywhere,
    ],
    Needs::NOTHING.with_check(systemd_analyze_or_root) => [units_pass_systemd_analyze_verify],
}
