//! The core, proven with real packets: accounts added with the real binaries, applied
//! through netlink in a namespace the test made, and probed from a client namespace over a
//! veth pair. Needs root; every test makes and removes its own namespaces.

mod common;

use std::net::IpAddr;
use std::process::Output;

use common::Proto::{Tcp, Udp};
use common::{
    Needs, Probe, Servers, TempConfig, Topology, assert_probes, cross, ns_cmd, show, stdout,
};
use pbxwall::nft::render::normalize;

const TCP_PORTS: [u16; 4] = [22, 80, 5060, 10000];
const UDP_PORTS: [u16; 4] = [5060, 4569, 69, 12000];

/// Every port the servers listen on.
fn services() -> Vec<(common::Proto, u16)> {
    TCP_PORTS
        .iter()
        .map(|p| (Tcp, *p))
        .chain(UDP_PORTS.iter().map(|p| (Udp, *p)))
        .collect()
}

#[track_caller]
fn ok(out: Output, what: &str) -> Output {
    assert_eq!(out.status.code(), Some(0), "{what}:\n{}", show(&out));
    out
}

fn nft_list(topo: &Topology) -> String {
    let out = ns_cmd(topo.pbx_ns(), "nft", &["list", "table", "inet", "pbxwall"]);
    assert!(out.status.success(), "nft list: {}", show(&out));
    stdout(&out)
}

/// A configuration with one trusted host and three accounts.
fn setup(topo: &Topology) -> TempConfig {
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = [\"198.51.100.11/32\"]\n");
    let ns = Some(topo.pbx_ns());
    ok(
        cfg.run(
            ns,
            "add-ip",
            [
                "joe",
                "192.0.2.10",
                "2001:db8::10",
                "--allow",
                "sip-udp,iax",
                "--no-restart",
            ],
        ),
        "add-ip joe",
    );
    ok(
        cfg.run(ns, "add-ip", ["admin", "203.0.113.10", "--allow", "8,4"]),
        "add-ip admin",
    );
    ok(
        cfg.run(
            ns,
            "pbxwall",
            ["add-ip", "backup-site", "198.51.100.10", "--allow", "0"],
        ),
        "pbxwall add-ip backup-site",
    );
    cfg
}

/// Who may reach what after [`setup`].
fn expected(src: IpAddr, proto: common::Proto, port: u16) -> bool {
    let s = src.to_string();
    let rtp = proto == Udp && port == 12000; // [rtp] from = "any"
    match s.as_str() {
        "198.51.100.11" | "198.51.100.10" => true, // trusted, and an account with "all"
        "192.0.2.10" | "2001:db8::10" => rtp || (proto == Udp && [5060, 4569].contains(&port)),
        "203.0.113.10" => rtp || (proto == Tcp && [22, 80].contains(&port)),
        _ => rtp,
    }
}

fn accounts_reach_exactly_their_services_and_del_acct_removes_access() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &TCP_PORTS, &UDP_PORTS);
    let cfg = setup(&topo);
    let sources = common::CLIENT_ADDRS;
    assert_probes(&topo, &cross(&sources, &services(), expected));

    ok(
        cfg.run(Some(topo.pbx_ns()), "del-acct", ["joe"]),
        "del-acct joe",
    );
    let after = cross(
        &["192.0.2.10", "2001:db8::10", "203.0.113.10"],
        &services(),
        |src, proto, port| {
            let s = src.to_string();
            expected(src, proto, port) && !(s == "192.0.2.10" || s == "2001:db8::10")
                || (proto == Udp && port == 12000)
        },
    );
    assert_probes(&topo, &after);
}

fn dry_run_text_is_what_the_kernel_lists() {
    let topo = Topology::new();
    let cfg = setup(&topo);
    // Ranges that merge, v6 networks, a range ending at the top of the IPv4 space.
    ok(
        cfg.run(
            Some(topo.pbx_ns()),
            "add-ip",
            [
                "ranges",
                "192.0.2.0/25",
                "192.0.2.128/26",
                "2001:db8:1::/48",
                "240.0.0.0/4",
                "--force",
                "--allow",
                "sip-tcp,web",
            ],
        ),
        "add-ip ranges",
    );
    let dry = ok(cfg.run(None, "restart", ["--dry-run"]), "restart --dry-run");
    let rendered = normalize(&stdout(&dry));
    let listed = normalize(&nft_list(&topo));
    assert!(
        rendered == listed,
        "restart --dry-run and nft list differ:\n--- dry-run ---\n{rendered}\n--- nft list ---\n{listed}"
    );
    // 192.0.2.0/25 and /26 merged, and split around 192.0.2.10 (another account's, with
    // more services: its element jumps to the chain of the union, in the host map).
    assert!(
        rendered.contains(
            "elements = { 192.0.2.0-192.0.2.9 : jump allow_sip-tcp.web, \
             192.0.2.11-192.0.2.191 : jump allow_sip-tcp.web,"
        ),
        "{rendered}"
    );
    assert!(
        rendered.contains("192.0.2.10 : jump allow_sip-udp.sip-tcp.iax.web"),
        "{rendered}"
    );
    // The dry-run text also loads with nft -f, as is.
    let scratch = common::Netns::create(&format!("{}-x", topo.names().pbx_ns));
    let out = common::run_cmd(
        common::ns_command(scratch.name(), "nft", &["-f", "-"]),
        Some(&dry.stdout),
    );
    assert!(
        out.status.success(),
        "nft -f of the dry-run text: {}",
        show(&out)
    );
}

fn failed_apply_keeps_the_previous_ruleset_and_the_files() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[5060]);
    let cfg = setup(&topo);
    let before = nft_list(&topo);

    // Without CAP_NET_ADMIN the kernel refuses every nftables message: add-ip must fail with
    // exit 1, leave no account file behind and leave the live ruleset as it was.
    let setpriv = common::tool_path("setpriv");
    let out = cfg.run_program(
        Some(topo.pbx_ns()),
        &setpriv,
        [
            "--bounding-set=-net_admin".as_ref(),
            "--inh-caps=-net_admin".as_ref(),
            "--".as_ref(),
            common::bin("add-ip").as_os_str(),
            "eve".as_ref(),
            "192.0.2.11".as_ref(),
            "--allow".as_ref(),
            "sip-udp".as_ref(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        common::stderr(&out).contains("the change was not saved"),
        "{}",
        show(&out)
    );
    assert!(
        cfg.read("accounts/eve.toml").is_none(),
        "eve.toml was rolled back"
    );
    assert_eq!(normalize(&nft_list(&topo)), normalize(&before));
    assert_probes(
        &topo,
        &[
            Probe::udp("192.0.2.10", 5060, true),
            Probe::udp("192.0.2.11", 5060, false),
            Probe::tcp("203.0.113.10", 22, true),
        ],
    );
}

fn an_account_of_100k_addresses_applies() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[], &[5060]);
    let cfg = TempConfig::new();
    cfg.write("pbxwall.toml", "trusted = []\n");
    // 100,000 distinct, non-adjacent IPv6 addresses: 2001:db8::0, ::2, ::4, ... (so
    // 2001:db8::10 is in, 2001:db8::11 is not), plus 256 IPv4 singles and networks.
    let mut addrs: Vec<String> = (0..100_000u32)
        .map(|i| format!("\"2001:db8::{:x}:{:x}\"", (i * 2) >> 16, (i * 2) & 0xffff))
        .collect();
    addrs.push("\"192.0.2.10\"".into());
    cfg.write(
        "accounts/big.toml",
        &format!(
            "services = [\"sip-udp\"]\naddresses = [{}]\n",
            addrs.join(",\n")
        ),
    );
    let out = ok(
        cfg.run(Some(topo.pbx_ns()), "restart", [] as [&str; 0]),
        "restart with 100k addresses",
    );
    assert!(
        stdout(&out).contains("100001 address ranges"),
        "{}",
        show(&out)
    );
    assert_probes(
        &topo,
        &[
            Probe::udp("2001:db8::10", 5060, true),
            Probe::udp("2001:db8::11", 5060, false),
            Probe::udp("192.0.2.10", 5060, true),
            Probe::udp("192.0.2.11", 5060, false),
        ],
    );
}

fn lockout_guard_refuses_to_cut_off_this_ssh_client() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[22], &[]);
    let cfg = setup(&topo);
    let ns = Some(topo.pbx_ns());
    let before = nft_list(&topo);
    // admin (203.0.113.10) has ssh: its session may restart, but not delete its own access.
    let admin = [("SSH_CONNECTION", "203.0.113.10 40000 192.0.2.1 22")];
    ok(
        cfg.run_env(ns, "restart", [] as [&str; 0], &admin),
        "restart as admin",
    );
    let out = cfg.run_env(ns, "del-acct", ["admin"], &admin);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        common::stderr(&out).contains(
            "refusing to apply: your SSH client 203.0.113.10 could no longer reach tcp port 22"
        ),
        "{}",
        show(&out)
    );
    assert!(
        cfg.read("accounts/admin.toml").is_some(),
        "admin.toml restored"
    );
    assert_eq!(normalize(&nft_list(&topo)), normalize(&before));
    assert_probes(&topo, &[Probe::tcp("203.0.113.10", 22, true)]);

    // A stranger's session is refused too, unless --force.
    let stranger = [("SSH_CONNECTION", "2001:db8:1::10 40000 2001:db8::1 22")];
    let out = cfg.run_env(ns, "restart", [] as [&str; 0], &stranger);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    ok(
        cfg.run_env(ns, "restart", ["--force"], &stranger),
        "restart --force",
    );
    ok(
        cfg.run_env(ns, "del-acct", ["admin", "--force"], &admin),
        "del-acct --force",
    );
    assert_probes(&topo, &[Probe::tcp("203.0.113.10", 22, false)]);
}

fn rtp_from_whitelist_admits_only_accounts_and_media_ranges() {
    let topo = Topology::new();
    let _servers = Servers::start(&topo, &[], &[12000, 20500]);
    let cfg = TempConfig::new();
    cfg.write(
        "pbxwall.toml",
        "trusted = []\n[rtp]\nports = \"12000-12999\"\nfrom = \"whitelist\"\n",
    );
    // A provider-style account: signalling from one address, media from another range.
    cfg.write(
        "accounts/trunk.toml",
        "addresses = [\"198.51.100.10\"]\nmedia = [\"203.0.113.0/28\"]\nservices = [\"sip-udp\"]\n",
    );
    cfg.write(
        "accounts/phone.toml",
        "addresses = [\"2001:db8::10\"]\nservices = [\"iax\"]\n",
    );
    ok(
        cfg.run(Some(topo.pbx_ns()), "restart", [] as [&str; 0]),
        "restart",
    );
    assert_probes(
        &topo,
        &[
            Probe::udp("198.51.100.10", 12000, true),
            Probe::udp("203.0.113.10", 12000, true),
            Probe::udp("2001:db8::10", 12000, true),
            Probe::udp("203.0.113.10", 20500, false),
            Probe::udp("192.0.2.11", 12000, false),
            Probe::udp("2001:db8::11", 12000, false),
            Probe::udp("198.51.100.11", 12000, false),
        ],
    );
}

common::test_main! {
    Needs::ROOT => [
        accounts_reach_exactly_their_services_and_del_acct_removes_access,
        an_account_of_100k_addresses_applies,
        dry_run_text_is_what_the_kernel_lists,
        lockout_guard_refuses_to_cut_off_this_ssh_client,
        rtp_from_whitelist_admits_only_accounts_and_media_ranges,
    ],
    Needs::root_and(&["setpriv"]) => [failed_apply_keeps_the_previous_ruleset_and_the_files],
}
