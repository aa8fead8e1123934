//! Dynamic shell completion: the values clap's static completion scripts cannot know.
//!
//! The services of `--allow` (profile names and TM3 codes, local profiles included), the
//! account names of `del-acct` (and the account of `add-ip`/`add-fqdn`, for `--append`),
//! the addresses of an account for `del-acct NAME --address` and the provider ids of
//! `enable-trusted-providers` depend on the files of this machine. The bash and fish
//! scripts generated from clap (see [`crate::manpages::completions`]) get an extra part
//! ([`bash_script`], [`fish_script`]) that asks the program itself: run with the environment
//! variable [`ENV`] set to `services`, `accounts`, `addresses:NAME` or `providers`, every
//! binary prints those values, one a line,
//! and exits before parsing its arguments ([`answer_if_asked`]). The configuration and
//! share folders are taken from `PBXWALL_CONFIG_DIR` / `PBXWALL_SHARE_DIR` (the scripts
//! set them from `--config-dir` / `--share-dir` on the line being completed).

use std::path::PathBuf;

use crate::model::{AccountName, display_net};
use crate::providers;
use crate::store::{self, DEFAULT_CONFIG_DIR, DEFAULT_STATE_DIR, Paths};

/// The environment variable that asks a binary for completion values instead of running.
pub const ENV: &str = "PBXWALL_COMPLETE";

/// The binaries whose completions get the dynamic part: they take services, account names
/// or provider ids (`pbxwall` through its subcommands).
pub const DYNAMIC_BINARIES: &[&str] = &[
    "pbxwall",
    "add-ip",
    "add-fqdn",
    "del-acct",
    "enable-trusted-providers",
];

/// What can be asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `--allow`: profile names, then their TM3 codes.
    Services,
    /// Names of the account files.
    Accounts,
    /// Ids of the trusted providers.
    Providers,
    /// `del-acct NAME --address`: the addresses, networks and host names of account NAME
    /// (asked as `addresses:NAME`).
    Addresses(String),
}

impl Kind {
    /// The kind named by the value of [`ENV`].
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "services" => Some(Kind::Services),
            "accounts" => Some(Kind::Accounts),
            "providers" => Some(Kind::Providers),
            _ => s
                .strip_prefix("addresses:")
                .map(|name| Kind::Addresses(name.to_owned())),
        }
    }
}

/// The folders as the commands would use them, from the environment only.
fn paths_from_env() -> Paths {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    Paths {
        config_dir: var("PBXWALL_CONFIG_DIR")
            .map_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR), PathBuf::from),
        state_dir: var("PBXWALL_STATE_DIR")
            .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), PathBuf::from),
        share_dir: var("PBXWALL_SHARE_DIR").map_or_else(store::default_share_dir, PathBuf::from),
    }
}

/// The completion values of `kind` for the folders `paths`; nothing when they cannot be
/// read (completion must never print an error into the command line being typed).
pub fn candidates(kind: Kind, paths: &Paths) -> Vec<String> {
    let profiles = || store::load_profiles(paths).unwrap_or_else(|_| store::builtin_profiles());
    match kind {
        Kind::Services => {
            let profiles = profiles();
            let ordered = profiles.ordered();
            let names = ordered.iter().map(|p| p.name.clone());
            let codes = ordered.iter().filter_map(|p| p.code.map(|c| c.to_string()));
            names.chain(codes).collect()
        }
        Kind::Accounts => {
            let mut names = store::account_names(paths).unwrap_or_default();
            names.sort();
            names
        }
        Kind::Providers => providers::load_providers(paths, None, &profiles())
            .map(|list| list.ids())
            .unwrap_or_default(),
        Kind::Addresses(name) => {
            let Ok(name) = name.parse::<AccountName>() else {
                return Vec::new();
            };
            let path = paths.account_file(&name);
            let Some(account) = store::read_config(&path)
                .ok()
                .flatten()
                .and_then(|text| store::parse_account(&path, &text, &profiles()).ok())
            else {
                return Vec::new();
            };
            let nets = account.addresses.iter().map(display_net);
            nets.chain(account.fqdns.iter().map(|f| f.to_string()))
                .collect()
        }
    }
}

/// When [`ENV`] is set (by a completion script), prints the values it asks for and returns
/// true: the caller exits without parsing its arguments. An unknown kind prints nothing.
pub fn answer_if_asked() -> bool {
    let Some(asked) = std::env::var_os(ENV) else {
        return false;
    };
    if let Some(kind) = asked.to_str().and_then(Kind::parse) {
        for value in candidates(kind, &paths_from_env()) {
            outln!("{}", crate::model::printable(&value));
        }
    }
    true
}

/// The bash part added after clap's script for `bin`, whose completion function is
/// `clap_fn`: services after `--allow`/`-a` (the last piece of a comma-separated list),
/// account names as `del-acct`'s arguments and as the first argument of `add-ip` and
/// `add-fqdn`, the account's addresses and names after `del-acct NAME --address` (also the
/// last piece of a list), provider ids as `enable-trusted-providers`' (and `--disable`'s);
/// everything else goes to clap's function. Registered with the same
/// options as clap's, minus the fallback to file names when a dynamic list has no match.
pub fn bash_script(bin: &str, clap_fn: &str) -> String {
    let wrapper = format!("_pbxwall_dynamic_{}", clap_fn.trim_start_matches('_'));
    format!(
        r#"
# Services, account names and provider ids depend on this machine's files: the program
# prints them when {ENV}=services|accounts|providers is set. Everything else is the
# completion above.
_pbxwall_dynamic() {{
    local clap_fn="$1"
    shift
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local cmd="${{COMP_WORDS[0]##*/}}" i w value kind="" folders=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        value="${{COMP_WORDS[i+1]}}"
        [[ $value == = ]] && value="${{COMP_WORDS[i+2]}}"
        case "$w" in
            --config-dir) folders+=("PBXWALL_CONFIG_DIR=$value") ;;
            --share-dir) folders+=("PBXWALL_SHARE_DIR=$value") ;;
            add-ip|add-fqdn|del-acct|enable-trusted-providers)
                [[ $cmd == pbxwall ]] && cmd="$w" ;;
        esac
    done
    # The arguments that are not options or their values (without pbxwall's subcommand).
    local pos=() skip="" sub=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        if [[ -n $skip ]]; then
            [[ $w == = ]] || skip=""
            continue
        fi
        case "$w" in
            --allow|-a|--comment|--address|--config-dir|--state-dir|--share-dir|--cron-file|--providers-file) skip=1 ;;
            -*|=) ;;
            *) if [[ ${{COMP_WORDS[0]##*/}} == pbxwall && -z $sub ]]; then sub=1; else pos+=("$w"); fi ;;
        esac
    done
    [[ $prev == = && $COMP_CWORD -ge 2 ]] && prev="${{COMP_WORDS[COMP_CWORD-2]}}"
    case "$cmd,$prev" in
        add-ip,--allow|add-ip,-a|add-fqdn,--allow|add-fqdn,-a) kind=services ;;
        del-acct,--address) kind="addresses:${{pos[0]}}" ;;
        *,--config-dir|*,--state-dir|*,--share-dir|*,--providers-file|*,--comment) ;;
        add-ip,*|add-fqdn,*) [[ $cur != -* && ${{#pos[@]}} -eq 0 ]] && kind=accounts ;;
        del-acct,*) [[ $cur != -* ]] && kind=accounts ;;
        enable-trusted-providers,*) [[ $cur != -* ]] && kind=providers ;;
    esac
    if [[ -z $kind ]]; then
        "$clap_fn" "$@"
        return
    fi
    local prefix="" word="$cur"
    if [[ ($kind == services || $kind == addresses:*) && $cur == *,* ]]; then
        prefix="${{cur%,*}},"
        word="${{cur##*,}}"
    fi
    local IFS=$'\n'
    COMPREPLY=($(compgen -P "$prefix" -W "$(env "${{folders[@]}}" {ENV}="$kind" "${{COMP_WORDS[0]}}" 2>/dev/null)" -- "$word"))
    compopt +o default +o bashdefault 2>/dev/null
    return 0
}}

{wrapper}() {{
    _pbxwall_dynamic {clap_fn} "$@"
}}

if [[ "${{BASH_VERSINFO[0]}}" -eq 4 && "${{BASH_VERSINFO[1]}}" -ge 4 || "${{BASH_VERSINFO[0]}}" -gt 4 ]]; then
    complete -F {wrapper} -o nosort -o bashdefault -o default {bin}
else
    complete -F {wrapper} -o bashdefault -o default {bin}
fi
"#
    )
}

/// fish: the account named on the line being completed (the first argument that is not
/// an option, an option's value or pbxwall's subcommand), for `del-acct NAME --address`;
/// an empty line when there is none.
const FISH_ACCOUNT: &str = r#"function __pbxwall_account_of_line
    set -l skip 0
    for w in (commandline -opc)[2..-1]
        if test $skip = 1
            set skip 0
            continue
        end
        switch $w
            case --config-dir --state-dir --share-dir --address --comment --allow -a
                set skip 1
            case '-*' del-acct
            case '*'
                echo $w
                return
        end
    end
    echo
end
"#;

/// The fish part added after clap's script for `bin`: the same values as [`bash_script`]
/// (`--allow` completes one service; fish has no comma-list completion).
pub fn fish_script(bin: &str) -> String {
    let ask = |kind: &str| format!("(env {ENV}={kind} (commandline -opc)[1] 2>/dev/null)");
    let mut out = format!(
        "\n# Services, account names and provider ids depend on this machine's files: the\n\
         # program prints them when {ENV}=services|accounts|providers is set.\n{FISH_ACCOUNT}"
    );
    // In `pbxwall`, each line applies only after its subcommand (clap's fish helper).
    let cmds: &[&str] = if bin == "pbxwall" {
        &["add-ip", "add-fqdn", "del-acct", "enable-trusted-providers"]
    } else {
        &[bin]
    };
    for &cmd in cmds {
        let cond = if bin == "pbxwall" {
            format!(" -n \"__fish_pbxwall_using_subcommand {cmd}\"")
        } else {
            String::new()
        };
        // The first argument after the command (after `pbxwall SUBCOMMAND`: the second).
        let first = if bin == "pbxwall" {
            format!(" -n \"__fish_pbxwall_using_subcommand {cmd}; and __fish_is_nth_token 2\"")
        } else {
            " -n \"__fish_is_nth_token 1\"".to_owned()
        };
        match cmd {
            "add-ip" | "add-fqdn" => {
                out.push_str(&format!(
                    "complete -c {bin}{cond} -s a -l allow -x -a \"{}\"\n",
                    ask("services")
                ));
                out.push_str(&format!(
                    "complete -c {bin}{first} -f -a \"{}\"\n",
                    ask("accounts")
                ));
            }
            "del-acct" => {
                out.push_str(&format!(
                    "complete -c {bin}{cond} -f -a \"{}\"\n",
                    ask("accounts")
                ));
                out.push_str(&format!(
                    "complete -c {bin}{cond} -l address -x -a \"{}\"\n",
                    ask("addresses:(__pbxwall_account_of_line)")
                ));
            }
            "enable-trusted-providers" => {
                out.push_str(&format!(
                    "complete -c {bin}{cond} -f -a \"{}\"\n",
                    ask("providers")
                ));
                out.push_str(&format!(
                    "complete -c {bin}{cond} -l disable -x -a \"{}\"\n",
                    ask("providers")
                ));
            }
            _ => {}
        }
    }
    out
}

/// The zsh helper put into every zsh script of [`DYNAMIC_BINARIES`] (after clap's
/// `autoload` line); [`zsh_script`] points clap's `_default` actions of those arguments at
/// it. It reads the line from `$BUFFER`, because `_arguments` narrows `$words` to the
/// positional arguments.
const ZSH_HELPER: &str = r#"
# Services, account names, an account's addresses and provider ids depend on this
# machine's files: the program prints them when
# PBXWALL_COMPLETE=services|accounts|addresses:NAME|providers is set.
(( $+functions[_pbxwall_dynamic] )) ||
_pbxwall_dynamic() {
    # _arguments passes compadd options (-J group ...) first, the kind last.
    local kind=$argv[-1]
    argv[-1]=()
    local -a line folders values
    local i
    line=(${(Q)${(z)BUFFER}})
    for ((i = 2; i < $#line; i++)); do
        case $line[i] in
            --config-dir) folders+=("PBXWALL_CONFIG_DIR=$line[i+1]") ;;
            --config-dir=*) folders+=("PBXWALL_CONFIG_DIR=${line[i]#*=}") ;;
            --share-dir) folders+=("PBXWALL_SHARE_DIR=$line[i+1]") ;;
            --share-dir=*) folders+=("PBXWALL_SHARE_DIR=${line[i]#*=}") ;;
        esac
    done
    # clap's "*::names" takes every word after the first account name, options too: the
    # value of a --address after it comes here as an account.
    local prev=$line[-1]
    [[ $BUFFER == *' ' ]] || prev=$line[-2]
    [[ $kind == accounts && $prev == --address ]] && kind=addresses
    if [[ $kind == addresses ]]; then
        # The account: the first argument that is not an option or an option's value.
        local account="" skip=""
        for ((i = 2; i < $#line; i++)); do
            if [[ -n $skip ]]; then
                skip=""
                continue
            fi
            case $line[i] in
                --config-dir|--state-dir|--share-dir|--address|--comment|--allow|-a) skip=1 ;;
                -*|del-acct) ;;
                *) account=$line[i]; break ;;
            esac
        done
        kind="addresses:$account"
    fi
    values=(${(f)"$(env $folders PBXWALL_COMPLETE=$kind $line[1] 2>/dev/null)"})
    [[ $kind == services || $kind == addresses:* ]] && compset -P '*,'
    compadd "$@" -a values
}
"#;

/// clap's zsh script for `bin` with the services, account names and provider ids completed
/// by asking the program (see [`bash_script`]); other binaries' scripts are returned as
/// they are.
pub fn zsh_script(bin: &str, clap_script: &str) -> String {
    if !DYNAMIC_BINARIES.contains(&bin) {
        return clap_script.to_owned();
    }
    let mut out = String::with_capacity(clap_script.len() + ZSH_HELPER.len());
    for line in clap_script.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        // clap's action for an argument without a value hint: `...:VALUE_NAME:_default' \`.
        let kind = if body.contains("]:SERVICES:_default'") {
            Some("services")
        } else if body.starts_with("'*--address=[") {
            Some("addresses")
        } else if body.starts_with("'*::names -- ")
            || body.starts_with("'::name -- ")
            || body.contains("]:NAME:_default'")
        {
            Some("accounts")
        } else if body.starts_with("'*::ids -- ") || body.contains("]:ID:_default'") {
            Some("providers")
        } else {
            None
        };
        match kind {
            Some(kind) => {
                out.push_str(&line.replacen(":_default'", &format!(":_pbxwall_dynamic {kind}'"), 1))
            }
            None => out.push_str(line),
        }
        if body == "autoload -U is-at-least" {
            out.push_str(ZSH_HELPER);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse() {
        assert_eq!(Kind::parse("services"), Some(Kind::Services));
        assert_eq!(Kind::parse("accounts"), Some(Kind::Accounts));
        assert_eq!(Kind::parse("providers"), Some(Kind::Providers));
        assert_eq!(Kind::parse("files"), None);
        assert_eq!(
            Kind::parse("addresses:joe"),
            Some(Kind::Addresses("joe".into()))
        );
    }

    #[test]
    fn addresses_are_those_of_the_account_named() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: tmp.path().join("config"),
            state_dir: tmp.path().join("state"),
            share_dir: tmp.path().join("share"),
        };
        std::fs::create_dir_all(paths.accounts_dir()).unwrap();
        std::fs::write(
            paths.accounts_dir().join("joe.toml"),
            "addresses = [\"203.0.113.7\", \"2001:db8::/48\"]\nfqdns = [\"joe.example\"]\nservices = [1]\n",
        )
        .unwrap();
        let of = |name: &str| candidates(Kind::Addresses(name.into()), &paths);
        assert_eq!(of("joe"), ["203.0.113.7", "2001:db8::/48", "joe.example"]);
        assert!(of("nobody").is_empty() && of("../x").is_empty() && of("").is_empty());
    }

    #[test]
    fn services_are_profile_names_then_codes() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: tmp.path().join("config"),
            state_dir: tmp.path().join("state"),
            share_dir: tmp.path().join("share"),
        };
        let services = candidates(Kind::Services, &paths);
        assert!(services.contains(&"sip-udp".to_owned()), "{services:?}");
        assert!(services.contains(&"1".to_owned()), "{services:?}");
        assert!(candidates(Kind::Accounts, &paths).is_empty());
        assert!(!candidates(Kind::Providers, &paths).is_empty());
    }
}
