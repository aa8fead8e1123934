//! Man pages and shell completions, generated from the clap parsers in [`crate::cli`] (built
//! from the arguments each command module defines).
//!
//! # One list of binaries
//!
//! [`BINARIES`] names the parser of every one-command binary (`add-ip`, `restart`, ...).
//! Everything generated here iterates over it: the section-8 man page of each binary and
//! the bash, zsh and fish completions of each binary and of the `pbxwall` dispatcher
//! ([`DISPATCHER`]). Adding a command is one line in [`BINARIES`]; the test
//! `tests/man_pages.rs` fails, naming the command, when a `[[bin]]` in Cargo.toml that is
//! also a `pbxwall` subcommand is missing from it.
//!
//! `pbxwall(8)` (the overview) and `pbxwall.toml(5)` are written by hand in `man/`, because
//! they explain the model, the files and the failure policy, which clap does not know.
//!
//! # Where the output goes
//!
//! Nothing here is a user-visible command. The man pages are committed in `man/`; the test
//! `tests/man_pages.rs` regenerates them in memory and fails when they are out of date.
//! `make man` runs that test with `PBXWALL_UPDATE_MAN=1`, which writes them instead, and
//! `make completions` runs it with `PBXWALL_COMPLETIONS_DIR=DIR`, which writes the
//! completion scripts there (they are build output, not committed).
//!
//! Generation is deterministic: no date, no paths from the build machine, so the committed
//! pages only change when the command-line definitions (or the version) change.

use std::io;
use std::path::Path;

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use crate::cli::{
    AddFqdnCli, AddIpCli, DelAcctCli, EnableTrustedProvidersCli, IpcheckerCli, PbxwallCli,
    RestartCli, StatusCli,
};
use crate::complete;
use crate::store::{DEFAULT_CONFIG_DIR, DEFAULT_SHARE_DIR, DEFAULT_STATE_DIR};

/// The parser of every one-command binary: one line each. Each gets `man/NAME.8` and
/// completions. Keep it in the order of `pbxwall --help`.
pub const BINARIES: &[fn() -> Command] = &[
    AddIpCli::command,
    AddFqdnCli::command,
    DelAcctCli::command,
    RestartCli::command,
    IpcheckerCli::command,
    StatusCli::command,
    EnableTrustedProvidersCli::command,
];

/// `pbxwall` subcommands without a binary of their own: (subcommand, page name, how it is
/// called). Each gets `man/PAGE.8`, generated from the dispatcher's subcommand like the
/// pages of [`BINARIES`].
pub const SUBCOMMAND_PAGES: &[(&str, &str, &str)] = &[
    ("init", "pbxwall-init", "pbxwall init"),
    ("knock", "pbxwall-knock", "pbxwall knock"),
    ("grants", "pbxwall-grants", "pbxwall grants"),
    ("revoke", "pbxwall-revoke", "pbxwall revoke"),
    ("ban", "pbxwall-ban", "pbxwall ban"),
    ("unban", "pbxwall-unban", "pbxwall unban"),
    ("bans", "pbxwall-bans", "pbxwall bans"),
    ("admitted", "pbxwall-admitted", "pbxwall admitted"),
    ("list", "pbxwall-list", "pbxwall list"),
    ("bundle", "pbxwall-bundle", "pbxwall bundle"),
    ("sync", "pbxwall-sync", "pbxwall sync"),
    ("geo", "pbxwall-geo", "pbxwall geo"),
];

/// The `pbxwall` dispatcher: completions only (its man page, `man/pbxwall.8`, is written by
/// hand).
pub const DISPATCHER: fn() -> Command = PbxwallCli::command;

/// Man pages written by hand, in `man/`.
pub const HAND_WRITTEN: &[&str] = &["pbxwall.8", "pbxwall.toml.5"];

/// Examples shown in the man page of a binary: (binary, command line, what it does).
/// Most are the README's examples; the test parses every one with its binary's parser, so
/// an example cannot drift from the options.
pub const EXAMPLES: &[(&str, &str, &str)] = &[
    (
        "add-ip",
        "add-ip joe-hotel 203.0.113.7 --allow sip-udp,sip-tcp --expires 2h",
        "A temporary account: the kernel closes it after two hours with no command run.",
    ),
    (
        "pbxwall",
        "pbxwall knock --setup",
        "On the server: write a random sequence of three ports to [knock], apply it, and print how to knock.",
    ),
    (
        "pbxwall",
        "pbxwall knock pbx.example.com --sequence 23456,34567,45678",
        "On a client: knock (TCP SYNs to the three ports, in order) to be granted [knock] services.",
    ),
    (
        "add-ip",
        r#"add-ip joe-office 203.0.113.7 --allow sip-udp,sip-tcp --comment "Joe's office""#,
        "Allow SIP over UDP and TCP from one address.",
    ),
    (
        "add-ip",
        "add-ip backup-site 198.51.100.0/28 --allow 0",
        "Allow everything from a small network (TM3 code 0 = all).",
    ),
    (
        "add-ip",
        "add-ip lab 192.0.2.10,2001:db8::/48 --allow ssh --no-restart",
        "Save an account for an IPv4 address and an IPv6 network; apply at the next restart.",
    ),
    (
        "add-fqdn",
        "add-fqdn joe-mobile joe.dyndns.example --allow 1,3",
        "Allow SIP (UDP) and IAX from whatever address a dynamic-DNS name has.",
    ),
    (
        "del-acct",
        "del-acct joe-office",
        "Remove an account and apply.",
    ),
    (
        "restart",
        "restart",
        "Resolve, compile and apply atomically.",
    ),
    (
        "restart",
        "restart --dry-run",
        "Print the nftables ruleset instead of applying it (no root needed).",
    ),
    (
        "ipchecker",
        r#"ipchecker --install-cron "*/5 * * * *""#,
        "Run ipchecker from cron every 5 minutes.",
    ),
    (
        "ipchecker",
        "ipchecker --remove-cron",
        "Stop running it from cron.",
    ),
    (
        "status",
        "status",
        "What is loaded, whether it matches the configuration, and every account.",
    ),
    (
        "status",
        "status --json",
        "The same, for scripts and monitoring.",
    ),
    (
        "pbxwall",
        "pbxwall init --admin 198.51.100.7",
        "First-time setup on a LAN PBX, administered from 198.51.100.7 as well as from this SSH session's client.",
    ),
    (
        "pbxwall",
        "pbxwall init --cloud --asterisk-dir /etc/asterisk --sshd-config /etc/ssh/sshd_config",
        "First-time setup on a cloud server (no private range trusted), with the default places to read ports from spelled out.",
    ),
    (
        "pbxwall",
        "pbxwall geo lookup 192.0.2.7",
        "The country of an address, and whether the geo gate lets it use the open paths (RTP).",
    ),
    (
        "pbxwall",
        "pbxwall geo update",
        "Load a newly downloaded country database: only the changed ranges are written.",
    ),
    (
        "status",
        "status --prometheus-file /var/lib/prometheus/node-exporter/pbxwall.prom",
        "Write the metrics for node_exporter's textfile collector (run it from cron).",
    ),
    (
        "pbxwall",
        r#"pbxwall ban 203.0.113.66 --for 2h --comment "REGISTER flood""#,
        "Drop everything from one address for two hours, ending what it has open.",
    ),
    (
        "pbxwall",
        "pbxwall ban --stdin --for 7d < blocklist.txt",
        "Ban every address of a list, one a line, for a week.",
    ),
    (
        "pbxwall",
        "pbxwall unban 203.0.113.66",
        "Let an address in again before its ban runs out.",
    ),
    (
        "pbxwall",
        "pbxwall bans --json",
        "Every ban with its time left and origin (manual, guard, fail2ban).",
    ),
    (
        "enable-trusted-providers",
        "enable-trusted-providers --list",
        "List the providers, what each opens, and which are enabled.",
    ),
    (
        "enable-trusted-providers",
        "enable-trusted-providers --all",
        "Enable every provider whose data is well sourced.",
    ),
];

/// Every binary's command, built, with its binary name set (as clap sees it when run).
pub fn binaries() -> Vec<Command> {
    BINARIES.iter().map(|f| built(f())).collect()
}

/// The dispatcher's command, built.
pub fn dispatcher() -> Command {
    built(DISPATCHER())
}

fn built(mut cmd: Command) -> Command {
    let name = cmd.get_name().to_owned();
    cmd = cmd.bin_name(name);
    cmd.build();
    cmd
}

/// One generated file: its name (`add-ip.8`, `_add-ip`, ...) and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// File name, relative to the folder it is written to.
    pub name: String,
    /// Contents.
    pub text: String,
}

/// The pages of [`SUBCOMMAND_PAGES`]: the dispatcher's subcommand, named `pbxwall-NAME`
/// and called `pbxwall NAME`.
pub fn subcommand_pages() -> Vec<Command> {
    let dispatcher = dispatcher();
    SUBCOMMAND_PAGES
        .iter()
        .map(|&(name, page, called)| {
            dispatcher
                .find_subcommand(name)
                .unwrap_or_else(|| panic!("{name} in SUBCOMMAND_PAGES is not a pbxwall subcommand"))
                .clone()
                .name(page)
                .bin_name(called)
        })
        .collect()
}

/// The section-8 man page of every binary in [`BINARIES`] and every subcommand in
/// [`SUBCOMMAND_PAGES`], in memory, dated `date` (`YYYY-MM-DD`, the last change of the page:
/// see [`page_date`] and [`set_th`]).
pub fn man_pages(date: &str) -> Vec<Generated> {
    let dispatcher = dispatcher();
    let mut all = binaries();
    all.extend(subcommand_pages());
    all.iter()
        .map(|cmd| Generated {
            name: format!("{}.8", cmd.get_name()),
            text: man_page(cmd, date, &dispatcher, &all),
        })
        .collect()
}

/// The date in a page's `.TH` line (its third field), if it has one.
pub fn page_date(page: &str) -> Option<String> {
    let th = page.lines().find(|l| l.starts_with(".TH "))?;
    let fields = th_fields(th);
    fields.get(2).filter(|d| !d.is_empty()).cloned()
}

/// The page with the date and source (third and fourth fields) of its `.TH` line set:
/// `make man` dates a page when its contents change, and stamps the version on every page.
pub fn set_th(page: &str, date: &str, source: &str) -> String {
    let mut out = String::new();
    for line in page.lines() {
        if line.starts_with(".TH ") {
            let mut f = th_fields(line);
            f.resize(f.len().max(5), String::new());
            f[2] = date.to_owned();
            f[3] = source.to_owned();
            out.push_str(".TH");
            for field in &f {
                if field.is_empty() || field.contains(' ') {
                    out.push_str(&format!(" \"{field}\""));
                } else {
                    out.push_str(&format!(" {field}"));
                }
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The `source` field every page carries: `pbxwall VERSION`.
pub fn source() -> String {
    format!("pbxwall {}", env!("CARGO_PKG_VERSION"))
}

/// Splits a `.TH` line into its fields (double quotes group words).
fn th_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut rest = line.trim_start_matches(".TH").trim_start();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            fields.push(r[..end].to_owned());
            rest = r.get(end + 1..).unwrap_or("").trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            fields.push(rest[..end].to_owned());
            rest = rest[end..].trim_start();
        }
    }
    fields
}

/// One of clap_mangen's section renderers.
type RenderSection = fn(&Man, &mut dyn io::Write) -> io::Result<()>;

/// Renders the man page of one binary: clap_mangen's title, NAME, SYNOPSIS, DESCRIPTION
/// and OPTIONS, then EXIT STATUS and NOTES (from the command's after-help), EXAMPLES,
/// FILES and SEE ALSO.
fn man_page(cmd: &Command, date: &str, dispatcher: &Command, all: &[Command]) -> String {
    let name = cmd.get_name();
    let man = Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section("8")
        .date(date)
        .source(source())
        .manual("pbxwall manual");
    let mut out = Vec::new();
    let sections: [RenderSection; 2] = [Man::render_title, Man::render_name_section];
    for render in sections {
        render(&man, &mut out).expect("writing to a Vec cannot fail");
    }
    synopsis(cmd)
        .to_writer(&mut out)
        .expect("writing to a Vec cannot fail");
    man.render_description_section(&mut out)
        .expect("writing to a Vec cannot fail");
    if dispatcher.find_subcommand(name).is_some() {
        let mut roff = Roff::new();
        roff.control("PP", []);
        roff.text([
            roman("The same command is "),
            bold(format!("pbxwall {name}")),
            roman("; see "),
            bold("pbxwall"),
            roman("(8) for how pbxwall works as a whole."),
        ]);
        roff.to_writer(&mut out)
            .expect("writing to a Vec cannot fail");
    }
    man.render_options_section(&mut out)
        .expect("writing to a Vec cannot fail");
    if let Some(commands) = subcommands_section(cmd) {
        commands
            .to_writer(&mut out)
            .expect("writing to a Vec cannot fail");
    }

    let mut roff = Roff::new();
    let after = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let mut paragraphs = after
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .peekable();
    if let Some(exit) = paragraphs.next_if(|p| p.to_ascii_lowercase().starts_with("exit status")) {
        roff.control("SH", ["EXIT STATUS"]);
        let codes = exit.split_once(':').map_or(exit.as_str(), |(_, rest)| rest);
        for (code, what) in exit_codes(codes) {
            roff.control("TP", []);
            roff.text([bold(code)]);
            roff.text([roman(what)]);
        }
    }
    let notes: Vec<String> = paragraphs.collect();
    if !notes.is_empty() {
        roff.control("SH", ["NOTES"]);
        for (i, p) in notes.iter().enumerate() {
            if i > 0 {
                roff.control("PP", []);
            }
            roff.text([roman(p.as_str())]);
        }
    }

    let called = cmd.get_bin_name().unwrap_or(name);
    let examples: Vec<_> = EXAMPLES
        .iter()
        .filter(|(_, line, _)| *line == called || line.starts_with(&format!("{called} ")))
        .collect();
    if !examples.is_empty() {
        roff.control("SH", ["EXAMPLES"]);
        for (_, line, what) in examples {
            roff.control("TP", []);
            roff.text([bold(*line)]);
            roff.text([roman(*what)]);
        }
    }

    roff.control("SH", ["FILES"]);
    for (path, what) in [
        (
            format!("{DEFAULT_CONFIG_DIR}/pbxwall.toml"),
            "Settings (optional); see pbxwall.toml(5).",
        ),
        (
            format!("{DEFAULT_CONFIG_DIR}/accounts/NAME.toml"),
            "One permission file per account.",
        ),
        (
            format!("{DEFAULT_CONFIG_DIR}/profiles/NAME.toml"),
            "Local overrides or additions to the shipped service profiles.",
        ),
        (
            format!("{DEFAULT_SHARE_DIR}/"),
            "Shipped data: profiles/ and providers.toml.",
        ),
        (
            format!("{DEFAULT_STATE_DIR}/"),
            "State: the lock, the name-resolution cache, the last applied ruleset, the bans, admissions and knock grants with their expiry, the parse cache of the account files.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([italic(path)]);
        roff.text([roman(what)]);
    }

    roff.control("SH", ["SEE ALSO"]);
    let mut see_also = vec![("pbxwall", "8"), ("pbxwall.toml", "5")];
    see_also.extend(
        all.iter()
            .map(Command::get_name)
            .filter(|n| *n != name)
            .map(|n| (n, "8")),
    );
    see_also.push(("nft", "8"));
    let mut inlines = Vec::new();
    for (i, (page, section)) in see_also.iter().enumerate() {
        inlines.push(bold(*page));
        let sep = if i + 1 < see_also.len() { ", " } else { "" };
        inlines.push(roman(format!("({section}){sep}")));
    }
    roff.text(inlines);
    roff.to_writer(&mut out)
        .expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("roff output is UTF-8")
}

/// The SYNOPSIS section: every visible option with its value name (`[-a|--allow SERVICES]`),
/// then the positional arguments, optional ones in brackets and repeatable ones followed by
/// `...` (clap_mangen's own synopsis drops both the value names and the `...`). A command
/// with subcommands (`pbxwall geo`) gets one line per subcommand, with the subcommand's own
/// arguments after its name.
fn synopsis(cmd: &Command) -> Roff {
    let called = cmd.get_bin_name().unwrap_or(cmd.get_name()).to_owned();
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    let subcommands = visible_subcommands(cmd);
    if subcommands.is_empty() {
        let mut line = vec![bold(called)];
        push_arguments(&mut line, cmd, None);
        roff.text(line);
        return roff;
    }
    for (i, sub) in subcommands.into_iter().enumerate() {
        if i > 0 {
            roff.control("br", []);
        }
        let mut line = vec![bold(called.clone())];
        push_arguments(&mut line, cmd, None);
        line.push(roman(" "));
        line.push(bold(sub.get_name().to_owned()));
        push_arguments(&mut line, sub, Some(cmd));
        roff.text(line);
    }
    roff
}

/// The subcommands of a command that has them (`pbxwall geo`): a COMMANDS section with each
/// one's summary and its own options; `None` for every other command.
fn subcommands_section(cmd: &Command) -> Option<Roff> {
    let subcommands = visible_subcommands(cmd);
    if subcommands.is_empty() {
        return None;
    }
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in subcommands {
        roff.control("TP", []);
        roff.text([bold(sub.get_name().to_owned())]);
        let about = sub
            .get_long_about()
            .or_else(|| sub.get_about())
            .map(|s| s.to_string())
            .unwrap_or_default();
        roff.text([roman(about)]);
        for arg in own_arguments(sub, Some(cmd)) {
            let Some(help) = arg.get_long_help().or_else(|| arg.get_help()) else {
                continue;
            };
            let name = match arg.get_long() {
                Some(long) => bold(format!("--{long}")),
                None => italic(
                    arg.get_value_names()
                        .and_then(|v| v.first())
                        .map_or_else(|| arg.get_id().as_str().to_uppercase(), |v| v.to_string()),
                ),
            };
            roff.control("RS", []);
            roff.control("TP", []);
            roff.text([name]);
            roff.text([roman(help.to_string())]);
            roff.control("RE", []);
        }
    }
    Some(roff)
}

/// A command's subcommands as a user calls them (not clap's generated `help`).
fn visible_subcommands(cmd: &Command) -> Vec<&Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .collect()
}

/// A command's visible arguments, without those it shares with `parent` (the global options
/// and `--help` that clap copies into every subcommand).
fn own_arguments<'a>(
    cmd: &'a Command,
    parent: Option<&'a Command>,
) -> impl Iterator<Item = &'a clap::Arg> {
    cmd.get_arguments().filter(move |a| {
        !a.is_hide_set()
            && parent.is_none_or(|p| p.get_arguments().all(|pa| pa.get_id() != a.get_id()))
    })
}

/// Appends a command's visible options and positional arguments (those it does not share
/// with `parent`) to a SYNOPSIS line.
fn push_arguments(
    line: &mut Vec<clap_mangen::roff::Inline>,
    cmd: &Command,
    parent: Option<&Command>,
) {
    let args = own_arguments(cmd, parent);
    let (positionals, options): (Vec<_>, Vec<_>) = args.partition(|a| a.is_positional());
    let repeated = |a: &clap::Arg| {
        matches!(a.get_action(), clap::ArgAction::Append)
            || a.get_num_args().is_some_and(|n| n.max_values() > 1)
    };
    let value_names = |a: &clap::Arg| -> Vec<String> {
        match a.get_value_names() {
            Some(v) => v.iter().map(|n| n.to_string()).collect(),
            None => vec![a.get_id().as_str().to_uppercase()],
        }
    };
    for a in options {
        line.push(roman(" ["));
        let mut flag = Vec::new();
        if let Some(short) = a.get_short() {
            flag.push(format!("-{short}"));
        }
        if let Some(long) = a.get_long() {
            flag.push(format!("--{long}"));
        }
        for (i, f) in flag.into_iter().enumerate() {
            if i > 0 {
                line.push(roman("|"));
            }
            line.push(bold(f));
        }
        if a.get_action().takes_values() {
            for v in value_names(a) {
                line.push(roman(" "));
                line.push(italic(v));
            }
        }
        if repeated(a) {
            line.push(roman("]..."));
        } else {
            line.push(roman("]"));
        }
    }
    for a in positionals {
        let required = a.is_required_set();
        line.push(roman(if required { " " } else { " [" }));
        line.push(italic(value_names(a).join(" ")));
        if !required {
            line.push(roman("]"));
        }
        if repeated(a) {
            line.push(roman("..."));
        }
    }
}

/// Fills the generated blocks of a hand-written page (`man/pbxwall.8`) from the dispatcher:
/// the lines between `.\" generated: KIND (make man)` and `.\" end generated` are
/// replaced, where KIND is `commands` (every subcommand with its summary), `options` (the
/// options every command takes) or `see-also` (the other pages). Everything else is kept.
pub fn fill_generated_blocks(page: &str) -> String {
    let dispatcher = dispatcher();
    let binaries: Vec<String> = binaries().iter().map(|c| c.get_name().to_owned()).collect();
    let mut out = String::new();
    let mut skipping = false;
    for line in page.lines() {
        if skipping {
            if line.starts_with(GENERATED_END) {
                skipping = false;
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if let Some(kind) = line
            .strip_prefix(GENERATED_START)
            .and_then(|rest| rest.split_whitespace().next())
        {
            let roff = match kind {
                "commands" => commands_block(&dispatcher, &binaries),
                "options" => options_block(&dispatcher),
                "see-also" => see_also_block(&binaries),
                _ => continue,
            };
            out.push_str(&without_preamble(&roff.render()));
            skipping = true;
        }
    }
    out
}

/// Start of a generated block in a hand-written page: `.\" generated: KIND (make man)`.
pub const GENERATED_START: &str = ".\\\" generated: ";
/// End of a generated block.
pub const GENERATED_END: &str = ".\\\" end generated";

/// roff's definition of `\*(Aq` (a typewriter apostrophe), which [`Roff::render`] puts
/// first; a hand-written page has it once at its top.
fn without_preamble(rendered: &str) -> String {
    rendered
        .lines()
        .filter(|l| !l.starts_with(".ie \\n(.g .ds Aq") && !l.starts_with(".el .ds Aq"))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn commands_block(dispatcher: &Command, binaries: &[String]) -> Roff {
    let mut roff = Roff::new();
    let shown = dispatcher
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help");
    for sub in shown {
        let name = sub.get_name();
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        roff.control("TP", []);
        roff.text([bold(name)]);
        let mut line = vec![roman(format!("{}.", about.trim_end_matches('.')))];
        if binaries.iter().any(|b| b == name) {
            line.extend([roman(" See "), bold(name), roman("(8).")]);
        } else if let Some((_, page, _)) = SUBCOMMAND_PAGES.iter().find(|(s, _, _)| *s == name) {
            line.extend([roman(" See "), bold(*page), roman("(8).")]);
        }
        roff.text(line);
    }
    roff
}

fn options_block(dispatcher: &Command) -> Roff {
    let mut roff = Roff::new();
    for arg in dispatcher.get_arguments().filter(|a| !a.is_hide_set()) {
        let mut head = Vec::new();
        if let Some(short) = arg.get_short() {
            head.push(bold(format!("-{short}")));
        }
        if let Some(long) = arg.get_long() {
            if !head.is_empty() {
                head.push(roman(", "));
            }
            head.push(bold(format!("--{long}")));
        }
        let takes_value = arg.get_action().takes_values();
        if takes_value {
            for v in arg.get_value_names().unwrap_or_default() {
                head.push(roman(" "));
                head.push(italic(v.as_str()));
            }
        }
        roff.control("TP", []);
        roff.text(head);
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let mut body = vec![roman(format!("{}.", help.trim_end_matches('.')))];
        if let Some(env) = arg.get_env() {
            body.extend([
                roman(" Environment: "),
                bold(env.to_string_lossy().into_owned()),
                roman("."),
            ]);
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        if takes_value && !defaults.is_empty() {
            body.extend([roman(" Default: "), italic(defaults.join(",")), roman(".")]);
        }
        roff.text(body);
    }
    roff
}

fn see_also_block(binaries: &[String]) -> Roff {
    let mut pages: Vec<(&str, &str)> = vec![("pbxwall.toml", "5")];
    pages.extend(binaries.iter().map(|b| (b.as_str(), "8")));
    pages.extend(SUBCOMMAND_PAGES.iter().map(|(_, page, _)| (*page, "8")));
    pages.extend([("nft", "8"), ("systemd.timer", "5")]);
    let mut roff = Roff::new();
    for (i, (page, section)) in pages.iter().enumerate() {
        let sep = if i + 1 < pages.len() { "," } else { "" };
        roff.control("BR", [*page, &format!("({section}){sep}")]);
    }
    roff
}

/// Splits "0 success, 1 error (a, b), 2 usage error" into its codes and their meanings:
/// a new code starts at ", " or "; " followed by a number and a space.
fn exit_codes(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = text.trim().trim_end_matches('.');
    let mut sep = "";
    loop {
        let cut = rest.find([',', ';']);
        let piece = &rest[..cut.unwrap_or(rest.len())];
        let code = piece
            .split_once(' ')
            .filter(|(n, _)| n.parse::<u8>().is_ok());
        match (code, out.last_mut()) {
            (Some((n, what)), _) => out.push((n.to_owned(), what.to_owned())),
            (None, Some((_, what))) => {
                what.push_str(sep);
                what.push_str(piece);
            }
            (None, None) => out.push((String::new(), piece.to_owned())),
        }
        let Some(at) = cut else { break };
        let after = &rest[at + 1..];
        sep = if rest[at..].starts_with(',') {
            ", "
        } else {
            "; "
        };
        if !after.starts_with(' ') {
            // Not a list separator ("1,3"): part of the text.
            sep = &rest[at..at + 1];
        }
        rest = after.strip_prefix(' ').unwrap_or(after);
    }
    out
}

/// The shells completions are generated for, each with the name of its folder in the
/// output of [`write_completions`] (the Makefile installs each folder to that shell's
/// standard place).
pub const SHELLS: &[(Shell, &str)] = &[
    (Shell::Bash, "bash"),
    (Shell::Zsh, "zsh"),
    (Shell::Fish, "fish"),
];

/// The file name a shell's completion for `bin` is installed under.
pub fn completion_file_name(shell: Shell, bin: &str) -> String {
    match shell {
        Shell::Zsh => format!("_{bin}"),
        Shell::Fish => format!("{bin}.fish"),
        _ => bin.to_owned(),
    }
}

/// Completions for the dispatcher and every binary, per shell: `(shell dir, file)`, where
/// the shell dir is `bash`, `zsh` or `fish` (see [`SHELLS`]).
pub fn completions() -> Vec<(&'static str, Generated)> {
    let mut out = Vec::new();
    let cmds = std::iter::once(dispatcher()).chain(binaries());
    for cmd in cmds {
        let bin = cmd.get_name().to_owned();
        for &(shell, dir) in SHELLS {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), &bin, &mut buf);
            let mut text = String::from_utf8(buf).expect("completion scripts are UTF-8");
            if shell == Shell::Zsh {
                text = complete::zsh_script(&bin, &text);
            } else if complete::DYNAMIC_BINARIES.contains(&bin.as_str()) {
                text.push_str(&dynamic_completion(shell, &bin, &text));
            }
            out.push((
                dir,
                Generated {
                    name: completion_file_name(shell, &bin),
                    text,
                },
            ));
        }
    }
    out
}

/// The part of `bin`'s completion for `shell` that asks the program for services, account
/// names and provider ids ([`complete`]), added after clap's script `clap_script`.
fn dynamic_completion(shell: Shell, bin: &str, clap_script: &str) -> String {
    match shell {
        Shell::Bash => {
            // clap's script registers its function last: `complete -F _name ... bin`.
            let clap_fn = clap_script
                .lines()
                .find_map(|l| l.trim().strip_prefix("complete -F ")?.split(' ').next())
                .expect("clap's bash script registers a function");
            complete::bash_script(bin, clap_fn)
        }
        Shell::Fish => complete::fish_script(bin),
        _ => String::new(),
    }
}

/// Writes every completion to `dir/<shell>/<file>` (creating the folders), then
/// `dir/.stamp`, which `make` uses to know they are up to date.
pub fn write_completions(dir: &Path) -> io::Result<()> {
    for (shell_dir, g) in completions() {
        let d = dir.join(shell_dir);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(&g.name), g.text)?;
    }
    std::fs::write(dir.join(".stamp"), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_names_are_unique_and_not_the_dispatcher() {
        let mut names: Vec<String> = binaries().iter().map(|c| c.get_name().to_owned()).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len(), "a binary is listed twice in BINARIES");
        assert!(!names.iter().any(|n| n == "pbxwall"));
    }

    #[test]
    fn exit_codes_split_at_numbers_only() {
        let codes = exit_codes(" 0 success, 1 error (nothing changed, old stays), 2 usage error.");
        assert_eq!(
            codes,
            [
                ("0".into(), "success".into()),
                ("1".into(), "error (nothing changed, old stays)".into()),
                ("2".into(), "usage error".into()),
            ]
        );
        let codes = exit_codes("0 in sync; 1 error; 3 drifted (a; b, c)");
        assert_eq!(
            codes,
            [
                ("0".into(), "in sync".into()),
                ("1".into(), "error".into()),
                ("3".into(), "drifted (a; b, c)".into()),
            ]
        );
    }

    #[test]
    fn th_line_is_read_and_rewritten() {
        let page = ".TH ADD-IP 8 2026-11-22 \"pbxwall 0.1.0\" \"pbxwall manual\"\n.SH NAME\n";
        assert_eq!(page_date(page).as_deref(), Some("2026-11-22"));
        assert_eq!(
            set_th(page, "2027-01-01", "pbxwall 0.2.0"),
            ".TH ADD-IP 8 2027-01-01 \"pbxwall 0.2.0\" \"pbxwall manual\"\n.SH NAME\n"
        );
        assert_eq!(
            set_th(".TH X 8\n", "", "pbxwall 1"),
            ".TH X 8 \"\" \"pbxwall 1\" \"\"\n"
        );
    }

    #[test]
    fn completion_file_names() {
        assert_eq!(completion_file_name(Shell::Bash, "add-ip"), "add-ip");
        assert_eq!(completion_file_name(Shell::Zsh, "add-ip"), "_add-ip");
        assert_eq!(completion_file_name(Shell::Fish, "add-ip"), "add-ip.fish");
    }
}
