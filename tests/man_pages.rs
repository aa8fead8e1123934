//! The man pages in `man/` are generated from the clap definitions (src/cli.rs, through
//! src/manpages.rs) and committed; these tests regenerate them in memory and fail when a
//! committed page is out of date. Refresh them with
//!
//! ```text
//! make man        # PBXWALL_UPDATE_MAN=1 cargo test --test man_pages
//! ```
//!
//! which runs these same tests in a mode that writes the pages instead of comparing them.
//! A page's date moves to today only when its contents change.
//!
//! `make completions` runs them with `PBXWALL_COMPLETIONS_DIR=DIR`, which writes the bash,
//! zsh and fish completions of every binary there (build output, not committed).
//!
//! The hand-written pages (pbxwall(8), pbxwall.toml(5)) are checked against README.md,
//! the shipped `packaging/pbxwall.toml` and the settings parser.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use pbxwall::manpages::{self, Generated};
use pbxwall::model::Settings;
use pbxwall::store::parse_settings;

use common::Needs;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn man_dir() -> PathBuf {
    root().join("man")
}

fn update_mode() -> bool {
    std::env::var_os("PBXWALL_UPDATE_MAN").is_some_and(|v| v == "1")
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a page in `man/` should be, given what is committed (`None`: missing).
/// Returns `None` when the committed page is up to date.
fn refreshed(committed: Option<&str>, fresh_undated: &str) -> Option<String> {
    let src = manpages::source();
    let unchanged_body = committed.is_some_and(|c| {
        manpages::set_th(c, "", &src) == manpages::set_th(fresh_undated, "", &src)
    });
    let date = match committed.and_then(manpages::page_date) {
        Some(d) if unchanged_body => d,
        _ => today(),
    };
    let want = manpages::set_th(fresh_undated, &date, &src);
    (committed != Some(want.as_str())).then_some(want)
}

/// First line where two texts differ, for the failure message.
fn first_difference(old: &str, new: &str) -> String {
    for (i, (a, b)) in old.lines().zip(new.lines()).enumerate() {
        if a != b {
            return format!("line {}:\n  committed: {a}\n  generated: {b}", i + 1);
        }
    }
    format!(
        "committed has {} lines, generated {}",
        old.lines().count(),
        new.lines().count()
    )
}

fn man_pages_are_up_to_date() {
    let dir = man_dir();
    let mut expected: Vec<Generated> = manpages::man_pages("");
    for name in manpages::HAND_WRITTEN {
        let text = read(&dir.join(name));
        expected.push(Generated {
            name: (*name).to_owned(),
            text: manpages::fill_generated_blocks(&text),
        });
    }

    let mut stale = Vec::new();
    for page in &expected {
        let path = dir.join(&page.name);
        let committed = std::fs::read_to_string(&path).ok();
        if let Some(want) = refreshed(committed.as_deref(), &page.text) {
            if update_mode() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &want).unwrap();
                eprintln!("make man: wrote man/{}", page.name);
            } else {
                let why = match &committed {
                    Some(c) => first_difference(c, &want),
                    None => "missing".to_owned(),
                };
                stale.push(format!("man/{}: {why}", page.name));
            }
        }
    }

    let names: BTreeSet<&str> = expected.iter().map(|g| g.name.as_str()).collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let is_page = name.rsplit_once('.').is_some_and(|(_, s)| s.len() == 1);
        if is_page && !names.contains(name.as_str()) {
            if update_mode() {
                std::fs::remove_file(dir.join(&name)).unwrap();
                eprintln!("make man: removed man/{name} (no such binary any more)");
            } else {
                stale.push(format!(
                    "man/{name}: no binary in src/manpages.rs BINARIES makes this page"
                ));
            }
        }
    }

    assert!(
        stale.is_empty(),
        "man pages are out of date with src/cli.rs; run `make man` and commit man/:\n{}",
        stale.join("\n")
    );
}

/// Every `[[bin]]` in Cargo.toml that is also a `pbxwall` subcommand must be in
/// `manpages::BINARIES`, and every entry there must be both.
fn every_command_binary_is_listed_once() {
    let manifest: toml::Value = toml::from_str(&read(&root().join("Cargo.toml"))).unwrap();
    let bins: BTreeSet<String> = manifest["bin"]
        .as_array()
        .expect("[[bin]] list")
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect();
    let subcommands: BTreeSet<String> = manpages::dispatcher()
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    let listed: Vec<String> = manpages::binaries()
        .iter()
        .map(|c| c.get_name().to_owned())
        .collect();
    for sub in &subcommands {
        if bins.contains(sub) && !listed.contains(sub) {
            panic!(
                "`{sub}` is a [[bin]] and a pbxwall subcommand but has no man page: add its \
                 parser (`...Cli::command,`) to BINARIES in src/manpages.rs, then run `make man`"
            );
        }
    }
    for name in &listed {
        assert!(bins.contains(name), "{name} in BINARIES is not a [[bin]]");
        assert!(
            subcommands.contains(name),
            "{name} in BINARIES is not a pbxwall subcommand"
        );
    }
    assert!(bins.contains("pbxwall"), "the dispatcher binary is missing");
}

/// Splits a command line the way a shell would, for the examples (double quotes only).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            _ => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

fn examples_parse_with_their_binary() {
    let mut binaries = manpages::binaries();
    binaries.push(manpages::dispatcher());
    for (bin, line, _) in manpages::EXAMPLES {
        let words = shell_words(line);
        assert_eq!(words[0], *bin, "example {line:?} is not for {bin}");
        let cmd = binaries
            .iter()
            .find(|c| c.get_name() == *bin)
            .unwrap_or_else(|| panic!("example for {bin}, which is not in BINARIES"));
        if let Err(e) = cmd.clone().try_get_matches_from(&words) {
            panic!("example {line:?} does not parse: {e}");
        }
    }
}

/// Man source to plain text, enough to compare facts: escapes of `-`, quotes and
/// apostrophes, font changes.
fn unroff(s: &str) -> String {
    s.replace("\\-", "-")
        .replace("\\(dq", "\"")
        .replace("\\(aq", "'")
        .replace("\\*(Aq", "'")
        .replace("\\(lq", "\"")
        .replace("\\(rq", "\"")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
}

/// The text of the first `.nf` ... `.fi` block after `after` in a man page.
fn nofill_block_after(page: &str, after: &str) -> String {
    let start = page.find(after).unwrap_or_else(|| panic!("no {after:?}"));
    let rest = &page[start..];
    let nf = rest.find("\n.nf\n").expect(".nf") + 5;
    let fi = rest[nf..].find("\n.fi\n").expect(".fi");
    unroff(&rest[nf..nf + fi + 1])
}

/// The indented block after the line in README.md that starts with `intro`.
fn readme_block(readme: &str, intro: &str) -> String {
    let mut lines = readme.lines().skip_while(|l| !l.starts_with(intro));
    lines
        .next()
        .unwrap_or_else(|| panic!("README has no {intro:?}"));
    lines
        .skip_while(|l| l.is_empty())
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect()
}

fn settings(what: &str, text: &str) -> Settings {
    parse_settings(Path::new(what), text).unwrap_or_else(|e| panic!("{what}: {e}\n{text}"))
}

/// README's settings example, pbxwall.toml(5)'s, and the shipped packaging/pbxwall.toml
/// (uncommented) all show exactly the defaults the parser uses, and every key has an
/// entry in pbxwall.toml(5).
fn settings_documentation_shows_the_real_defaults() {
    let defaults = Settings::default();
    let readme = read(&root().join("README.md"));
    let block = readme_block(&readme, "Settings (all optional");
    assert_eq!(settings("README.md settings", &block), defaults);

    let page5 = read(&man_dir().join("pbxwall.toml.5"));
    let man_block = nofill_block_after(&page5, ".SH SETTINGS");
    assert_eq!(settings("pbxwall.toml(5) SETTINGS", &man_block), defaults);

    let shipped = read(&root().join("packaging/pbxwall.toml"));
    assert_eq!(
        settings("packaging/pbxwall.toml", &shipped),
        defaults,
        "the shipped file must set nothing"
    );
    let uncommented: String = shipped
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if !rest.starts_with([' ', '#']) && !rest.is_empty() => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        settings("packaging/pbxwall.toml, uncommented", &uncommented),
        defaults
    );

    // Every key of every example has its own entry (".B key" or ".B [table] key").
    let page5_text = unroff(&page5);
    let mut table = String::new();
    for text in [&block, &man_block, &uncommented] {
        table.clear();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                table = format!("{line} ");
            } else if let Some((key, _)) = line.split_once('=') {
                let entry = format!(".TP\n.B {table}{}\n", key.trim());
                assert!(
                    page5_text.contains(&entry),
                    "pbxwall.toml(5) has no entry {entry:?}"
                );
            }
        }
    }
}

/// pbxwall(8) says what README says: exit codes word for word, the services table and the
/// files.
fn overview_page_agrees_with_readme() {
    let readme = read(&root().join("README.md"));
    let page = unroff(&read(&man_dir().join("pbxwall.8")));
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let page_flat = flat(&page.replace(".TP\n.B ", "§"));

    // "0 success · 1 error, ... · 3 applied, ... (the output says which)."
    let exit = readme
        .split("### Exit status")
        .nth(1)
        .expect("README has ### Exit status");
    let exit = flat(exit.split("\n\n").nth(1).expect("exit status paragraph"));
    for item in exit.trim_end_matches('.').split(" · ") {
        let (code, what) = item.split_once(' ').unwrap();
        assert!(
            page_flat.contains(&format!("§{code} {what}")),
            "pbxwall(8) EXIT STATUS lacks README's \"{code} {what}\""
        );
    }

    // | 1 | sip-udp | udp 5060-5061, 5160-5161 |
    let mut rows = 0;
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() == 5 && cells[1].parse::<u8>().is_ok() {
            let row = format!("{}\t{}\t{}", cells[1], cells[2], cells[3]);
            assert!(page.contains(&row), "pbxwall(8) SERVICES lacks {row:?}");
            rows += 1;
        }
    }
    assert_eq!(rows, 10, "README's services table");

    // | `/etc/pbxwall/pbxwall.toml` | settings ... |
    let files = readme
        .split("## Files")
        .nth(1)
        .expect("README has ## Files");
    for line in files.lines().take_while(|l| !l.starts_with("Account file")) {
        for path in line.split('`').skip(1).step_by(2) {
            assert!(
                page.contains(path),
                "pbxwall(8) does not mention README's {path}"
            );
        }
    }
}

/// The generated pages as a reader sees them: SYNOPSIS keeps the value names and the `...`
/// of repeated arguments, each exit code is its own item, and a pointer to further
/// documentation names a file the package installs.
fn generated_pages_read_right() {
    let pages = manpages::man_pages("2026-01-01");
    let page = |name: &str| {
        let g = pages.iter().find(|g| g.name == name).unwrap();
        unroff(&g.text)
    };
    let synopsis = |name: &str| {
        let p = page(name);
        let after = p.split_once(".SH SYNOPSIS\n").unwrap().1.to_owned();
        after.lines().next().unwrap().to_owned()
    };
    let add_ip = synopsis("add-ip.8");
    assert!(
        add_ip.contains("[-a|--allow SERVICES]") && add_ip.ends_with("[NAME] [ADDR]..."),
        "{add_ip}"
    );
    let del_acct = synopsis("del-acct.8");
    assert!(del_acct.ends_with(" NAME..."), "{del_acct}");
    let providers = synopsis("enable-trusted-providers.8");
    assert!(providers.contains("[--disable ID]..."), "{providers}");

    let status = page("status.8");
    let exit = status
        .split_once(".SH \"EXIT STATUS\"\n")
        .unwrap()
        .1
        .split(".SH NOTES")
        .next()
        .unwrap()
        .to_owned();
    assert!(
        exit.starts_with(".TP\n0\nloaded and in sync with the configuration, nothing degraded\n.TP\n1\nerror\n.TP\n3\ndrifted"),
        "{exit}"
    );

    let providers = page("enable-trusted-providers.8");
    assert!(!providers.contains("see README)"), "{providers}");
    assert!(
        providers.contains("see /usr/share/doc/pbxwall/README.md"),
        "{providers}"
    );
}

/// `pbxwall init` has its page, pbxwall-init(8), with every option `--help` shows, and the
/// overview points to it.
fn init_has_a_page_with_its_options() {
    let pages = manpages::man_pages("2026-01-01");
    let init = pages
        .iter()
        .find(|g| g.name == "pbxwall-init.8")
        .expect("no pbxwall-init.8");
    let text = unroff(&init.text);
    for want in [
        ".TH PBXWALL-INIT 8",
        "pbxwall init [",
        "--sshd-config PATH",
        "--asterisk-dir DIR",
        "--admin ADDR]...",
        "--cloud",
        "EXIT STATUS",
        "no admin account is written",
        "pbxwall init --admin 198.51.100.7",
    ] {
        assert!(
            text.contains(want),
            "pbxwall-init(8) lacks {want:?}:\n{text}"
        );
    }
    let overview = unroff(&read(&man_dir().join("pbxwall.8")));
    assert!(overview.contains("See pbxwall-init(8)."), "pbxwall(8)");
}

fn pages_render_without_warnings() {
    for entry in std::fs::read_dir(man_dir()).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new(common::tool_path("groff"))
            .args(["-t", "-man", "-ww", "-z", "-Tutf8"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "groff warns about {}:\n{stderr}",
            path.display()
        );
    }
}

/// A shell's syntax check of a script, or `None` when the shell is not installed.
fn syntax_check(shell: &str, script: &Path) -> Option<Result<(), String>> {
    let args: &[&str] = match shell {
        "fish" => &["--no-execute"],
        _ => &["-n"],
    };
    let out = Command::new(shell).args(args).arg(script).output().ok()?;
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}

fn completions_for_every_binary() {
    let all = manpages::completions();
    let mut bins: Vec<String> = vec![manpages::dispatcher().get_name().to_owned()];
    bins.extend(manpages::binaries().iter().map(|c| c.get_name().to_owned()));
    assert_eq!(all.len(), bins.len() * manpages::SHELLS.len());

    let tmp = tempfile::tempdir().unwrap();
    let mut unchecked = BTreeSet::new();
    for (shell, g) in &all {
        assert!(
            bins.iter().any(|b| g.text.contains(b.as_str())),
            "{shell}/{} does not name its binary",
            g.name
        );
        let path = tmp.path().join(format!("{shell}-{}", g.name));
        std::fs::write(&path, &g.text).unwrap();
        match syntax_check(shell, &path) {
            Some(Ok(())) => {}
            Some(Err(e)) => panic!("{shell}/{}: syntax error:\n{e}", g.name),
            None => {
                unchecked.insert(*shell);
            }
        }
    }
    for shell in unchecked {
        eprintln!("NOTE: {shell} is not installed; its completions were not syntax-checked");
    }

    if let Some(dir) = std::env::var_os("PBXWALL_COMPLETIONS_DIR") {
        let dir = PathBuf::from(dir);
        manpages::write_completions(&dir).unwrap();
        eprintln!("make completions: wrote {}", dir.display());
    }
}

/// Drives a bash completion script as bash-completion would: sources it, sets COMP_WORDS
/// to the words typed (the last one being completed), calls the function `complete -p`
/// registered for the command, and prints COMPREPLY one a line.
const BASH_DRIVER: &str = r#"
script=$1; shift
source "$script"
COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
spec=$(complete -p "${COMP_WORDS[0]}") || exit 1
fn=${spec#*-F }; fn=${fn%% *}
"$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
[[ ${#COMPREPLY[@]} -eq 0 ]] || printf '%s\n' "${COMPREPLY[@]}"
"#;

/// What bash completes for `words` (the last one is being completed) with the generated
/// script of `words[0]`, the built binaries first in PATH, `config` as the configuration
/// folder and its parent as the current folder.
fn bash_complete(scripts: &Path, config: &Path, words: &[&str]) -> Vec<String> {
    let bins = Path::new(env!("CARGO_BIN_EXE_pbxwall")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("--norc")
        .arg("-c")
        .arg(BASH_DRIVER)
        .arg("driver")
        .arg(scripts.join("bash").join(words[0]))
        .args(words)
        .env("PATH", path)
        .current_dir(config.parent().unwrap())
        .env("PBXWALL_CONFIG_DIR", config)
        .env_remove("PBXWALL_SHARE_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash completion of {words:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `--allow` completes services (not file names), `del-acct` the existing accounts,
/// `enable-trusted-providers` the provider ids, in the single binaries and through
/// `pbxwall`; everything else is clap's completion as before.
fn completions_offer_services_accounts_and_providers() {
    let tmp = tempfile::tempdir().unwrap();
    let scripts = tmp.path().join("completions");
    manpages::write_completions(&scripts).unwrap();
    let config = tmp.path().join("config");
    std::fs::create_dir_all(config.join("accounts")).unwrap();
    for name in ["joe-office", "alice", "jane"] {
        std::fs::write(
            config.join("accounts").join(format!("{name}.toml")),
            "addresses = [\"203.0.113.7\"]\nservices = [\"ssh\"]\n",
        )
        .unwrap();
    }
    std::fs::write(
        config.join("accounts/alice.toml"),
        "addresses = [\"192.0.2.7\", \"203.0.113.7\"]\nservices = [\"ssh\"]\n",
    )
    .unwrap();
    // A file named like a service: --allow must not offer it.
    std::fs::write(tmp.path().join("sip-notes.txt"), "").unwrap();
    let complete = |words: &[&str]| bash_complete(&scripts, &config, words);

    assert_eq!(
        complete(&["add-ip", "joe", "--allow", "sip"]),
        ["sip-udp", "sip-tcp"]
    );
    assert_eq!(complete(&["add-fqdn", "joe", "-a", "ssh,i"]), ["ssh,iax"]);
    let all = complete(&["pbxwall", "add-ip", "joe", "--allow", ""]);
    for want in ["sip-udp", "iax", "ssh", "8"] {
        assert!(all.iter().any(|s| s == want), "{want} not in {all:?}");
    }
    assert_eq!(
        complete(&["add-ip", "joe", "--allow", "zzz"]),
        [] as [&str; 0]
    );

    assert_eq!(complete(&["del-acct", "j"]), ["jane", "joe-office"]);
    assert_eq!(
        complete(&["pbxwall", "del-acct", "--force", ""]),
        ["alice", "jane", "joe-office"]
    );
    // The account of add-ip/add-fqdn (for --append or --replace), and del-acct --address:
    // the addresses of the account named on the line.
    assert_eq!(complete(&["add-ip", "j"]), ["jane", "joe-office"]);
    assert_eq!(
        complete(&["pbxwall", "add-fqdn", "--append", "a"]),
        ["alice"]
    );
    assert_eq!(
        complete(&["del-acct", "joe-office", "--address", ""]),
        ["203.0.113.7"]
    );
    assert_eq!(
        complete(&[
            "pbxwall",
            "del-acct",
            "--force",
            "alice",
            "--address",
            "192.0.2.7,2"
        ]),
        ["192.0.2.7,203.0.113.7"]
    );

    let providers = pbxwall::providers::load_providers(
        &pbxwall::store::Paths {
            config_dir: config.clone(),
            state_dir: tmp.path().join("state"),
            share_dir: tmp.path().join("share"),
        },
        None,
        &pbxwall::store::builtin_profiles(),
    )
    .unwrap()
    .ids();
    assert!(!providers.is_empty());
    assert_eq!(complete(&["enable-trusted-providers", ""]), providers);
    assert_eq!(
        complete(&["pbxwall", "enable-trusted-providers", "--disable", ""]),
        providers
    );

    // Options and other values are still clap's.
    assert_eq!(complete(&["del-acct", "--no-r"]), ["--no-restart"]);
    assert_eq!(complete(&["pbxwall", "del"]), ["del-acct"]);
}

/// The same in fish: `complete -C LINE` after sourcing the generated script.
fn fish_completions_offer_services_accounts_and_providers() {
    let tmp = tempfile::tempdir().unwrap();
    let scripts = tmp.path().join("completions");
    manpages::write_completions(&scripts).unwrap();
    let config = tmp.path().join("config");
    std::fs::create_dir_all(config.join("accounts")).unwrap();
    for name in ["joe-office", "alice", "jane"] {
        std::fs::write(config.join("accounts").join(format!("{name}.toml")), "").unwrap();
    }
    std::fs::write(
        config.join("accounts/joe-office.toml"),
        "addresses = [\"203.0.113.7\"]\nfqdns = [\"joe.dyndns.example\"]\nservices = [\"ssh\"]\n",
    )
    .unwrap();
    std::fs::write(tmp.path().join("sip-notes.txt"), "").unwrap();
    let bins = Path::new(env!("CARGO_BIN_EXE_pbxwall")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let complete = |line: &str| -> Vec<String> {
        let bin = line.split(' ').next().unwrap();
        let script = scripts.join("fish").join(format!("{bin}.fish"));
        let out = Command::new("fish")
            .arg("--no-config")
            .arg("-c")
            .arg(format!(
                "source '{}'; complete -C '{line}'",
                script.display()
            ))
            .env("PATH", &path)
            .current_dir(tmp.path())
            .env("PBXWALL_CONFIG_DIR", &config)
            .env_remove("PBXWALL_SHARE_DIR")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fish: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(complete("add-ip joe --allow sip"), ["sip-tcp", "sip-udp"]);
    assert_eq!(complete("pbxwall add-fqdn x -a ss"), ["ssh"]);
    assert_eq!(complete("del-acct j"), ["jane", "joe-office"]);
    assert_eq!(complete("pbxwall del-acct a"), ["alice"]);
    assert_eq!(complete("enable-trusted-providers tw"), ["twilio"]);
    assert_eq!(
        complete("pbxwall enable-trusted-providers --disable tw"),
        ["twilio"]
    );
    assert_eq!(complete("del-acct --no-r"), ["--no-restart"]);
    assert_eq!(complete("add-ip j"), ["jane", "joe-office"]);
    assert_eq!(complete("pbxwall add-fqdn a"), ["alice"]);
    assert_eq!(
        complete("del-acct joe-office --address "),
        ["203.0.113.7", "joe.dyndns.example"]
    );
    assert_eq!(
        complete("pbxwall del-acct --force joe-office --address j"),
        ["joe.dyndns.example"]
    );
}

/// Types a line into an interactive zsh on a pseudo-terminal (zsh/zpty) and completes it
/// with a widget that records every match offered: `zsh -f DRIVER FPATH_DIR LINE OUT`
/// writes them to OUT, one a line, then creates OUT.done. Return is unbound before the
/// line is typed, so it is never run.
const ZSH_DRIVER: &str = r#"
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT= RPROMPT= ; fpath=(${(q)1} \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z "_record() { compadd() { builtin compadd \"\$@\"; local -a m; builtin compadd -O m \"\$@\"; print -lr -- \$m >> ${(q)3}; }; _main_complete; unfunction compadd; : > ${(q)3}.done; }"
zpty -w z "zle -C record complete-word _record; bindkey '^T' record; bindkey -r '^M'; bindkey -r '^J'"
zpty -n -w z "$2"$'\024'
for i in {1..100}; do [[ -e $3.done ]] && break; sleep 0.1; done
zpty -d z
"#;

/// The same in zsh, through clap's `_arguments` script and the helper added to it.
fn zsh_completions_offer_services_accounts_and_providers() {
    let tmp = tempfile::tempdir().unwrap();
    let scripts = tmp.path().join("completions");
    manpages::write_completions(&scripts).unwrap();
    let config = tmp.path().join("config");
    std::fs::create_dir_all(config.join("accounts")).unwrap();
    for name in ["joe-office", "alice", "jane"] {
        std::fs::write(config.join("accounts").join(format!("{name}.toml")), "").unwrap();
    }
    std::fs::write(
        config.join("accounts/joe-office.toml"),
        "addresses = [\"203.0.113.7\"]\nfqdns = [\"joe.dyndns.example\"]\nservices = [\"ssh\"]\n",
    )
    .unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let driver = tmp.path().join("driver.zsh");
    std::fs::write(&driver, ZSH_DRIVER).unwrap();
    let bins = Path::new(env!("CARGO_BIN_EXE_pbxwall")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut n = 0;
    let mut complete = |line: &str| -> Vec<String> {
        n += 1;
        let out_file = tmp.path().join(format!("out{n}"));
        let out = common::run_to_files(
            Command::new("zsh")
                .arg("-f")
                .arg(&driver)
                .arg(scripts.join("zsh"))
                .arg(line)
                .arg(&out_file)
                .env("PATH", &path)
                .current_dir(tmp.path())
                .env("PBXWALL_CONFIG_DIR", &config)
                .env("PBXWALL_STATE_DIR", &state)
                .env_remove("PBXWALL_SHARE_DIR"),
            std::time::Duration::from_secs(30),
        );
        assert!(
            out.status.success() && tmp.path().join(format!("out{n}.done")).exists(),
            "zsh completion of {line:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut got: Vec<String> = std::fs::read_to_string(&out_file)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        got.sort();
        got
    };
    assert_eq!(complete("add-ip joe --allow sip"), ["sip-tcp", "sip-udp"]);
    assert_eq!(complete("pbxwall add-fqdn x -a ssh,i"), ["iax"]);
    assert_eq!(complete("del-acct j"), ["jane", "joe-office"]);
    assert_eq!(complete("pbxwall del-acct a"), ["alice"]);
    assert_eq!(complete("enable-trusted-providers tw"), ["twilio"]);
    assert_eq!(
        complete("enable-trusted-providers --disable tw"),
        ["twilio"]
    );
    assert_eq!(complete("del-acct --no-r"), ["--no-restart"]);
    assert_eq!(complete("add-ip j"), ["jane", "joe-office"]);
    assert_eq!(complete("pbxwall add-fqdn a"), ["alice"]);
    assert_eq!(
        complete("del-acct joe-office --address "),
        ["203.0.113.7", "joe.dyndns.example"]
    );
    assert_eq!(
        complete("pbxwall del-acct --force joe-office --address 203.0.113.7,j"),
        ["joe.dyndns.example"]
    );
    // Nothing was run: the state folder is as it was.
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
}

common::test_main! {
    Needs::tools(&["bash"]) => [completions_offer_services_accounts_and_providers],
    Needs::tools(&["zsh"]) => [zsh_completions_offer_services_accounts_and_providers],
    Needs::tools(&["fish"]) => [fish_completions_offer_services_accounts_and_providers],
    Needs::NOTHING => [
        completions_for_every_binary,
        every_command_binary_is_listed_once,
        examples_parse_with_their_binary,
        generated_pages_read_right,
        init_has_a_page_with_its_options,
        man_pages_are_up_to_date,
        overview_page_agrees_with_readme,
        settings_documentation_shows_the_real_defaults,
    ],
    Needs::tools(&["groff"]) => [pages_render_without_warnings],
}
