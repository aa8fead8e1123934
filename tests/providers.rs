//! `enable-trusted-providers`: listing, enabling, updating and disabling provider accounts
//! with the real binaries, and (as root) that an enabled provider reaches SIP and nothing
//! else, in namespaces the test makes.
//!
//! The non-root tests use `--no-restart` or `--list`, so nothing reaches the kernel. Test
//! providers files use documentation addresses only.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{
    Case, Needs, Probe, Servers, TempConfig, Topology, assert_probes, case, show, stderr, stdout,
};
use serde_json::Value;

const BIN: &str = "enable-trusted-providers";

/// A high-confidence provider, a stale one and a low one, all on documentation addresses.
const TEST_PROVIDERS: &str = r#"
[[provider]]
id = "doc-sip"
name = "Documentation SIP"
website = "https://example.com"
confidence = "high"
checked = 2026-11-27
services = ["sip-udp"]
signalling_v4 = ["198.51.100.0/24"]
signalling_v6 = ["2001:db8:1::/64"]
media_v4 = ["192.0.2.128/25"]
[provider.sources]
signalling = ["https://example.com/ips"]
media = ["https://example.com/media"]

[[provider]]
id = "doc-stale"
name = "Documentation, stale"
confidence = "high"
stale = true
checked = 2019-01-01
services = ["sip-udp", "sip-tcp"]
signalling_v4 = ["192.0.2.0/26"]
[provider.sources]
signalling = ["an old dump"]

[[provider]]
id = "doc-low"
name = "Documentation, low"
confidence = "low"
checked = 2026-11-27
services = ["sip-udp"]
signalling_v4 = ["203.0.113.0/24"]
hostnames = ["sip.doc-low.example"]
[provider.sources]
signalling = ["one config"]
hostnames = ["one config"]
"#;

/// A temp config whose share dir is empty (so the built-in providers.toml is the default),
/// with the test providers file beside it.
struct Env {
    cfg: TempConfig,
    providers: PathBuf,
    share: String,
}

impl Env {
    fn new() -> Env {
        let cfg = TempConfig::new();
        let providers = cfg.root().join("test-providers.toml");
        std::fs::write(&providers, TEST_PROVIDERS).unwrap();
        let share = cfg.root().join("share").display().to_string();
        Env {
            cfg,
            providers,
            share,
        }
    }

    fn run_bin(&self, ns: Option<&str>, bin: &str, args: &[&str]) -> Output {
        self.cfg
            .run_env(ns, bin, args, &[("PBXWALL_SHARE_DIR", &self.share)])
    }

    /// `enable-trusted-providers ARGS` with the built-in providers.
    fn builtin(&self, args: &[&str]) -> Output {
        self.run_bin(None, BIN, args)
    }

    /// `enable-trusted-providers --providers-file TEST ARGS`.
    fn test(&self, ns: Option<&str>, args: &[&str]) -> Output {
        let mut a = vec!["--providers-file", self.providers.to_str().unwrap()];
        a.extend_from_slice(args);
        self.run_bin(ns, BIN, &a)
    }

    fn account(&self, id: &str) -> Option<String> {
        self.cfg.read(&format!("accounts/provider-{id}.toml"))
    }

    fn account_path(&self, id: &str) -> PathBuf {
        self.cfg
            .config_dir()
            .join(format!("accounts/provider-{id}.toml"))
    }

    fn accounts(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.cfg.config_dir().join("accounts"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

#[track_caller]
fn exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", show(out));
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", show(out)))
}

fn list_shows_every_builtin_entry_and_json_has_the_documented_shape() {
    let env = Env::new();
    let out = env.builtin(&["--list"]);
    exit(&out, 0);
    let text = stdout(&out);
    let header = text.lines().next().unwrap();
    for col in [
        "ID",
        "NAME",
        "CONFIDENCE",
        "CHECKED",
        "ENABLED",
        "--ALL",
        "OPENS",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(text.contains("(built-in providers.toml)"), "{text}");

    let out = env.builtin(&["--list", "--json"]);
    exit(&out, 0);
    let v = json(&out);
    assert_eq!(v["file"], "(built-in providers.toml)");
    assert_eq!(v["orphaned"], Value::Array(vec![]));
    let providers = v["providers"].as_array().unwrap();
    assert!(providers.len() >= 20, "{}", providers.len());
    for p in providers {
        let id = p["id"].as_str().unwrap();
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{id} "))),
            "{id} not listed"
        );
        for key in [
            "name",
            "website",
            "confidence",
            "stale",
            "checked",
            "in_all",
            "account",
            "enabled",
            "up_to_date",
            "services",
            "signalling",
            "media",
            "hostnames",
            "ports",
            "sources",
            "notes",
        ] {
            assert!(p.get(key).is_some(), "{id} has no {key}: {p}");
        }
        let conf = p["confidence"].as_str().unwrap();
        assert!(["high", "medium", "low"].contains(&conf), "{id}: {conf}");
        let well_sourced = conf != "low" && p["stale"] == false;
        assert_eq!(p["in_all"], well_sourced, "{id}");
        assert_eq!(p["account"], format!("provider-{id}"));
        assert_eq!(p["enabled"], false);
        assert_eq!(p["up_to_date"], Value::Null);
        let checked = p["checked"].as_str().unwrap();
        assert_eq!(checked.len(), 10, "{id}: {checked}");
        let opens =
            p["signalling"].as_array().unwrap().len() + p["hostnames"].as_array().unwrap().len();
        assert!(opens > 0, "{id} opens nothing");
        for t in p["hostnames"].as_array().unwrap() {
            assert!(!t.as_str().unwrap().contains('{'), "{id}: templated {t}");
        }
    }
    for id in ["twilio", "telnyx", "didww", "signalwire"] {
        let p = providers.iter().find(|p| p["id"] == id).unwrap();
        assert_eq!(p["confidence"], "high", "{id}");
        assert_eq!(p["in_all"], true, "{id}");
    }

    // Details of one entry, and --json with ids shows only those.
    let out = env.builtin(&["--list", "telnyx"]);
    exit(&out, 0);
    let t = stdout(&out);
    assert!(t.starts_with("telnyx: Telnyx"), "{t}");
    for want in [
        "sources",
        "signalling: https://sip.telnyx.com/",
        "192.76.120.10",
        "notes",
    ] {
        assert!(t.contains(want), "{want}: {t}");
    }
    let v = json(&env.builtin(&["--list", "--json", "didww", "twilio"]));
    let ids: Vec<&str> = v["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["didww", "twilio"]);
}

fn all_enables_exactly_the_well_sourced_builtin_entries() {
    let env = Env::new();
    let v = json(&env.builtin(&["--list", "--json"]));
    let mut want: Vec<String> = v["providers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in_all"] == true)
        .map(|p| format!("provider-{}.toml", p["id"].as_str().unwrap()))
        .collect();
    want.sort();
    let out = env.builtin(&["--all", "--no-restart"]);
    exit(&out, 0);
    assert_eq!(env.accounts(), want);
    for f in &want {
        let id = f.trim_start_matches("provider-").trim_end_matches(".toml");
        let text = env.account(id).unwrap();
        assert!(text.contains(&format!("provider = \"{id}\"")), "{text}");
        assert!(text.contains("services = [\"sip-udp\""), "{text}");
    }
    let twilio = env.account("twilio").unwrap();
    assert!(twilio.contains("\"54.172.60.0/30\""), "{twilio}");
    assert!(twilio.contains("media = [\"168.86.128.0/18\"]"), "{twilio}");
    let signalwire = env.account("signalwire").unwrap();
    assert!(
        signalwire.contains("fqdns = [\"sip.signalwire.com\""),
        "{signalwire}"
    );
    for excluded in ["zadarma", "voipms", "skyetel", "aaisp", "voxbone"] {
        assert!(
            env.account(excluded).is_none(),
            "{excluded} enabled by --all"
        );
    }
    // The list now says they are enabled and up to date.
    let v = json(&env.builtin(&["--list", "--json"]));
    for p in v["providers"].as_array().unwrap() {
        assert_eq!(p["enabled"], p["in_all"], "{}", p["id"]);
        if p["enabled"] == true {
            assert_eq!(p["up_to_date"], true, "{}", p["id"]);
        }
    }
    // Naming a low-confidence entry enables it, with a warning.
    let out = env.builtin(&["zadarma", "--no-restart"]);
    exit(&out, 0);
    assert!(
        stderr(&out).contains("warning: provider zadarma is low confidence"),
        "{}",
        show(&out)
    );
    assert!(env.account("zadarma").is_some());
    // The dispatcher runs the same command.
    let out = env.run_bin(
        None,
        "pbxwall",
        &["enable-trusted-providers", "--list", "--json"],
    );
    exit(&out, 0);
    assert_eq!(json(&out)["providers"][0]["enabled"], true);
}

fn enable_is_idempotent_updates_follow_the_file_and_disable_removes() {
    let env = Env::new();
    let out = env.test(None, &["doc-sip", "--no-restart"]);
    exit(&out, 0);
    assert!(
        stdout(&out).contains("enabled doc-sip (provider-doc-sip)"),
        "{}",
        show(&out)
    );
    let first = env.account("doc-sip").unwrap();
    for want in [
        "addresses = [\"198.51.100.0/24\", \"2001:db8:1::/64\"]",
        "services = [\"sip-udp\"]",
        "media = [\"192.0.2.128/25\"]",
        "provider = \"doc-sip\"",
        "created = ",
        "comment = \"Documentation SIP (trusted provider doc-sip; data checked 2026-11-27, confidence high)\"",
    ] {
        assert!(first.contains(want), "{want}\n{first}");
    }
    let created = first
        .lines()
        .find(|l| l.starts_with("created"))
        .unwrap()
        .to_owned();
    let mtime = std::fs::metadata(env.account_path("doc-sip"))
        .unwrap()
        .modified()
        .unwrap();

    // Again: same content, the file is not rewritten.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = env.test(None, &["doc-sip", "--no-restart", "--json"]);
    exit(&out, 0);
    let v = json(&out);
    assert_eq!(v["unchanged"], serde_json::json!(["doc-sip"]));
    assert_eq!(v["created"], serde_json::json!([]));
    assert_eq!(v["applied"], false);
    assert_eq!(env.account("doc-sip").unwrap(), first);
    let mtime2 = std::fs::metadata(env.account_path("doc-sip"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, mtime2, "an unchanged account file was rewritten");

    // --all enables doc-sip (already there) and nothing stale or low.
    let out = env.test(None, &["--all", "--no-restart"]);
    exit(&out, 0);
    assert_eq!(env.accounts(), ["provider-doc-sip.toml"]);

    // The providers file changes: the list says outdated, re-running updates, created kept.
    let updated = TEST_PROVIDERS
        .replacen("\"198.51.100.0/24\"", "\"198.51.100.0/25\"", 1)
        .replacen("checked = 2026-11-27", "checked = 2026-12-01", 1);
    assert_ne!(updated, TEST_PROVIDERS);
    std::fs::write(&env.providers, &updated).unwrap();
    let out = env.test(None, &["--list"]);
    exit(&out, 0);
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("doc-sip "))
        .unwrap()
        .to_owned();
    assert!(line.contains("outdated"), "{line}");
    let v = json(&env.test(None, &["--list", "--json"]));
    assert_eq!(v["providers"][0]["enabled"], true);
    assert_eq!(v["providers"][0]["up_to_date"], false);
    let out = env.test(None, &["doc-sip", "--no-restart"]);
    exit(&out, 0);
    assert!(stdout(&out).contains("updated doc-sip"), "{}", show(&out));
    let second = env.account("doc-sip").unwrap();
    assert!(second.contains("\"198.51.100.0/25\""), "{second}");
    assert!(second.contains("data checked 2026-12-01"), "{second}");
    assert!(second.contains(&created), "created not kept: {second}");

    // Disable, then disable again (not enabled: nothing to do, exit 0).
    let out = env.test(None, &["--disable", "doc-sip", "--no-restart"]);
    exit(&out, 0);
    assert!(stdout(&out).contains("disabled doc-sip"), "{}", show(&out));
    assert!(env.account("doc-sip").is_none());
    let out = env.test(None, &["--disable", "doc-sip", "--no-restart", "--json"]);
    exit(&out, 0);
    assert_eq!(json(&out)["not_enabled"], serde_json::json!(["doc-sip"]));

    // An enabled provider that left the file is listed as orphaned and can be disabled.
    exit(&env.test(None, &["doc-low", "--no-restart"]), 0);
    std::fs::write(
        &env.providers,
        TEST_PROVIDERS
            .split("[[provider]]\nid = \"doc-low\"")
            .next()
            .unwrap(),
    )
    .unwrap();
    let v = json(&env.test(None, &["--list", "--json"]));
    assert_eq!(
        v["orphaned"],
        serde_json::json!([{"id": "doc-low", "account": "provider-doc-low"}])
    );
    let out = env.test(None, &["--disable", "doc-low", "--no-restart"]);
    exit(&out, 0);
    assert!(env.account("doc-low").is_none());
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    case(&["doc-sp", "--no-restart"], 2, "unknown provider \"doc-sp\" in "),
    case(&["doc-sp", "--no-restart"], 2, "; did you mean doc-sip?"),
    case(&["doc-sip", "nope", "--no-restart"], 2, "unknown provider \"nope\""),
    case(&["provider-doc-sip", "--no-restart"], 2, "did you mean doc-sip?"),
    case(&["--disable", "nope", "--no-restart"], 2, "unknown provider \"nope\""),
    case(&["--disable", "doc-stal", "--no-restart"], 2, "did you mean doc-stale?"),
    case(&["--disable", "../x", "--no-restart"], 2, "unknown provider \"../x\""),
    case(&["--list", "nope"], 2, "unknown provider \"nope\""),
    case(&["--no-restart"], 2, "nothing to do: give provider ids, --all, --disable ID... or --list"),
    case(&["--list", "--all"], 2, "cannot be used with"),
    case(&["--disable", "doc-sip", "--all", "--no-restart"], 2, "cannot be used with"),
    case(&["doc-sip", "--no-restart", "--disable", "doc-low"], 2, "cannot be used with"),
    case(&["--bogus", "--no-restart"], 2, "unexpected argument '--bogus'"),
];

fn bad_ids_and_arguments_change_nothing() {
    let env = Env::new();
    exit(&env.test(None, &["doc-stale", "--no-restart"]), 0);
    // An account named like a provider's that this command did not make.
    let out = env.cfg.run(
        None,
        "add-ip",
        [
            "provider-doc-low",
            "192.0.2.99",
            "--allow",
            "ssh",
            "--no-restart",
        ],
    );
    exit(&out, 0);
    let before = common::snapshot(env.cfg.config_dir());
    let mut failures = Vec::new();
    let mut check = |args: &[&str], out: Output, code: i32, error: &str| {
        let err = stderr(&out);
        let first = err.lines().find(|l| l.contains("error")).unwrap_or("");
        let one_line = code == 2 || err.trim_end().lines().count() == 1;
        if out.status.code() != Some(code) || !first.contains(error) || !one_line {
            failures.push(format!(
                "{args:?}: want exit {code} and {error:?}\n{}",
                show(&out)
            ));
        }
        if common::snapshot(env.cfg.config_dir()) != before {
            failures.push(format!("{args:?} changed the config dir"));
        }
    };
    for c in CASES {
        check(c.args, env.test(None, c.args), c.code, c.error);
    }
    for (args, error) in [
        (
            &["doc-low", "--no-restart"][..],
            "account provider-doc-low exists and was not made by enable-trusted-providers for doc-low (its provider field is not set)",
        ),
        (
            &["--disable", "doc-low", "--no-restart"][..],
            "was not made by enable-trusted-providers",
        ),
    ] {
        check(args, env.test(None, args), 1, error);
    }
    let missing = env.cfg.root().join("missing.toml");
    let args = ["--providers-file", missing.to_str().unwrap(), "--list"];
    check(
        &args,
        env.run_bin(None, BIN, &args),
        1,
        "missing.toml: No such file",
    );

    let bad = env.cfg.root().join("bad.toml");
    std::fs::write(
        &bad,
        TEST_PROVIDERS.replace("\"203.0.113.0/24\"", "\"203.0.113.0/16\""),
    )
    .unwrap();
    let args = [
        "--providers-file",
        bad.to_str().unwrap(),
        "doc-sip",
        "--no-restart",
    ];
    check(
        &args,
        env.run_bin(None, BIN, &args),
        1,
        "bad.toml:33: invalid network \"203.0.113.0/16\": host bits are set after /16",
    );
    std::fs::write(
        &bad,
        TEST_PROVIDERS.replace("\"203.0.113.0/24\"", "\"202.0.0.0/7\""),
    )
    .unwrap();
    check(
        &args,
        env.run_bin(None, BIN, &args),
        1,
        "bad.toml:33: refusing 202.0.0.0/7",
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn an_enabled_provider_reaches_sip_and_nothing_else() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22, 5060], &[5060]);
    let env = Env::new();
    let ns = Some(topo.pbx_ns());

    // --all enables doc-sip (198.51.100.0/24, 2001:db8:1::/64: sip-udp) but neither the
    // stale doc-stale (192.0.2.0/26) nor the low doc-low (203.0.113.0/24).
    let out = env.test(ns, &["--all"]);
    exit(&out, 0);
    assert!(
        stdout(&out).contains("applied table inet pbxwall"),
        "{}",
        show(&out)
    );
    assert_eq!(env.accounts(), ["provider-doc-sip.toml"]);
    assert_probes(
        &topo,
        &[
            Probe::udp("198.51.100.10", 5060, true),
            Probe::udp("2001:db8:1::10", 5060, true),
            Probe::tcp("198.51.100.10", 22, false),
            Probe::tcp("198.51.100.10", 5060, false), // sip-tcp is not a service of doc-sip
            Probe::tcp("2001:db8:1::10", 22, false),
            Probe::udp("203.0.113.10", 5060, false),
            Probe::tcp("203.0.113.10", 22, false),
            Probe::udp("192.0.2.10", 5060, false),
            Probe::udp("2001:db8::10", 5060, false),
        ],
    );

    // Without CAP_NET_ADMIN the kernel refuses the batch: enabling and disabling fail with
    // exit 1 and leave the account files and the live ruleset as they were.
    let before = common::snapshot(env.cfg.config_dir());
    let setpriv = common::tool_path("setpriv");
    let providers = env.providers.to_str().unwrap();
    for args in [&["doc-stale"][..], &["--disable", "doc-sip"][..]] {
        let mut argv: Vec<std::ffi::OsString> = vec![
            "--bounding-set=-net_admin".into(),
            "--inh-caps=-net_admin".into(),
            "--".into(),
        ];
        argv.push(common::bin(BIN).into());
        argv.extend(["--providers-file", providers].map(Into::into));
        argv.extend(args.iter().map(Into::into));
        let out = env
            .cfg
            .run_program(ns, &setpriv, argv, &[("PBXWALL_SHARE_DIR", &env.share)]);
        exit(&out, 1);
        assert!(
            stderr(&out).contains("the change was not saved"),
            "{}",
            show(&out)
        );
        assert_eq!(
            common::snapshot(env.cfg.config_dir()),
            before,
            "{args:?} left files changed"
        );
    }
    assert_probes(
        &topo,
        &[
            Probe::udp("198.51.100.10", 5060, true),
            Probe::udp("192.0.2.10", 5060, false),
        ],
    );

    // Disabled: the provider's addresses lose SIP.
    let out = env.test(ns, &["--disable", "doc-sip"]);
    exit(&out, 0);
    assert_probes(
        &topo,
        &[
            Probe::udp("198.51.100.10", 5060, false),
            Probe::udp("2001:db8:1::10", 5060, false),
        ],
    );
}

/// Every source the shipped providers.toml cites is a URL anyone can open (http or https),
/// never an id of an index nobody else can look up.
fn every_shipped_source_is_a_public_url() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("providers.toml")).unwrap();
    let file: toml::Value = toml::from_str(&text).unwrap();
    let mut bad = Vec::new();
    let mut count = 0;
    for p in file["provider"].as_array().unwrap() {
        let id = p["id"].as_str().unwrap();
        for (fact, list) in p["sources"].as_table().unwrap() {
            for source in list.as_array().unwrap() {
                let source = source.as_str().unwrap();
                count += 1;
                let url = source.split_whitespace().next().unwrap_or("");
                let public = (url.starts_with("https://") || url.starts_with("http://"))
                    && url.len() > "https://x.y".len()
                    && !source.contains("find_string");
                if !public {
                    bad.push(format!("{id} {fact}: {source}"));
                }
            }
        }
    }
    assert!(count > 20, "{count} sources");
    assert!(
        bad.is_empty(),
        "sources that are not a public URL:\n{}",
        bad.join("\n")
    );
}

common::test_main! {
    Needs::NOTHING => [
        all_enables_exactly_the_well_sourced_builtin_entries,
        bad_ids_and_arguments_change_nothing,
        enable_is_idempotent_updates_follow_the_file_and_disable_removes,
        list_shows_every_builtin_entry_and_json_has_the_documented_shape,
        every_shipped_source_is_a_public_url,
    ],
    Needs::root_and(&["setpriv"]) => [an_enabled_provider_reaches_sip_and_nothing_else],
}
