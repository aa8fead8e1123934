//! Deterministic workloads: seeded accounts (mixed single addresses and CIDRs, v4 and v6,
//! random services), host-name zones, and the classic one-rule-per-address ruleset.
//!
//! Only documentation addresses: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and
//! 2001:db8::/32. The v4 space holds 768 addresses, so large workloads are mostly v6 and
//! their v4 part merges heavily (as it would in a real whitelist of a few offices).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

/// SplitMix64: small, fast, and the same sequence on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Services with their weights: SIP and IAX are what most accounts get; "all" is rare.
pub const SERVICES: [(&str, u64); 10] = [
    ("sip-udp", 30),
    ("sip-tcp", 12),
    ("iax", 12),
    ("web", 10),
    ("ssh", 10),
    ("webmin", 5),
    ("tftp", 5),
    ("fop", 5),
    ("ftp", 4),
    ("all", 3),
];

/// One to three distinct services, weighted by [`SERVICES`].
pub fn services(rng: &mut Rng) -> Vec<&'static str> {
    let total: u64 = SERVICES.iter().map(|s| s.1).sum();
    let want = 1 + rng.below(3) as usize;
    let mut out: Vec<&'static str> = Vec::new();
    // Bounded: at most 64 draws for at most 3 distinct picks.
    for _ in 0..64 {
        if out.len() == want {
            break;
        }
        let mut x = rng.below(total);
        for (name, w) in SERVICES {
            if x < w {
                if !out.contains(&name) {
                    out.push(name);
                }
                break;
            }
            x -= w;
        }
    }
    out
}

const V4_NETS: [[u8; 3]; 3] = [[192, 0, 2], [198, 51, 100], [203, 0, 113]];

/// A v4 source in the documentation space: 75 % single addresses, else a /28 to /31.
pub fn v4_source(rng: &mut Rng) -> String {
    let [a, b, c] = V4_NETS[rng.below(3) as usize];
    let host = rng.below(256) as u8;
    if rng.percent(75) {
        Ipv4Addr::new(a, b, c, host).to_string()
    } else {
        let len = 28 + rng.below(4) as u32;
        let mask = !0u32 << (32 - len);
        let net = u32::from(Ipv4Addr::new(a, b, c, host)) & mask;
        format!("{}/{len}", Ipv4Addr::from(net))
    }
}

/// First 16-bit group after 2001:db8 that generated v6 sources may use: 2001:db8:0::/48 and
/// 2001:db8:1::/48 hold the bench's own hosts (pbx, allowed sender, stranger) and the
/// host-name records, so no generated source ever covers them.
pub const V6_FIRST_FREE_GROUP: u64 = 0x0100;

/// A v6 source in 2001:db8:0100::/40 and up: 70 % single addresses, else a /48 to /124.
pub fn v6_source(rng: &mut Rng) -> String {
    let group = V6_FIRST_FREE_GROUP + rng.below(0x1_0000 - V6_FIRST_FREE_GROUP);
    let low = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) >> 48;
    let addr = (0x2001_0db8u128 << 96) | (u128::from(group) << 80) | low;
    if rng.percent(70) {
        Ipv6Addr::from(addr).to_string()
    } else {
        const LENS: [u32; 7] = [48, 56, 64, 80, 96, 112, 124];
        let len = LENS[rng.below(LENS.len() as u64) as usize];
        let mask = !0u128 << (128 - len);
        format!("{}/{len}", Ipv6Addr::from(addr & mask))
    }
}

/// A source: v4 with probability `v4_percent`, else v6.
pub fn source(rng: &mut Rng, v4_percent: u64) -> String {
    if rng.percent(v4_percent) {
        v4_source(rng)
    } else {
        v6_source(rng)
    }
}

/// An account as written to `accounts/NAME.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub addresses: Vec<String>,
    pub fqdns: Vec<String>,
    pub services: Vec<&'static str>,
}

impl Account {
    pub fn toml(&self) -> String {
        let quote = |v: &[String]| {
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut t = String::new();
        if !self.addresses.is_empty() {
            let _ = writeln!(t, "addresses = [{}]", quote(&self.addresses));
        }
        if !self.fqdns.is_empty() {
            let _ = writeln!(t, "fqdns = [{}]", quote(&self.fqdns));
        }
        let services: Vec<String> = self.services.iter().map(|s| s.to_string()).collect();
        let _ = writeln!(t, "services = [{}]", quote(&services));
        t.push_str("comment = \"generated by benches/bench.rs\"\n");
        t
    }
}

/// `count` accounts `acct00000...`, each with `addrs(rng)` sources (v4 with probability
/// `v4_percent`) and one to three services.
pub fn accounts(
    seed: u64,
    count: usize,
    mut addrs: impl FnMut(&mut Rng) -> usize,
    v4_percent: u64,
) -> Vec<Account> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| {
            let n = addrs(&mut rng);
            Account {
                name: format!("acct{i:05}"),
                addresses: (0..n).map(|_| source(&mut rng, v4_percent)).collect(),
                fqdns: Vec::new(),
                services: services(&mut rng),
            }
        })
        .collect()
}

/// Total number of address entries over `accounts`.
pub fn address_count(accounts: &[Account]) -> usize {
    accounts.iter().map(|a| a.addresses.len()).sum()
}

/// Host name `i` of a 1,000-name workload: `n0042.example.test`, or under `slow_zone` for
/// every tenth name when given (so the slow names are spread evenly through the sorted list,
/// as they would be in real life).
pub fn host_name(i: usize, slow_zone: Option<&str>) -> String {
    match slow_zone {
        Some(zone) if i.is_multiple_of(10) => format!("n{i:04}.{zone}"),
        _ => format!("n{i:04}.example.test"),
    }
}

/// The AAAA record of name `i` (`generation` moves it): 2001:db8:1:G::2i, never adjacent to
/// another name's, so every name is exactly one set element.
pub fn host_v6(i: usize, generation: u16) -> Ipv6Addr {
    let i = i as u128 * 2;
    Ipv6Addr::from(
        (0x2001_0db8_0001u128 << 80) | (u128::from(generation) << 64) | (i & 0xffff_ffff),
    )
}

/// The A record of name `i`: 198.51.100.0/24 and 203.0.113.0/24 in turn (shared by several
/// names, as NATed offices are).
pub fn host_v4(i: usize) -> Ipv4Addr {
    let [a, b, c] = V4_NETS[1 + (i / 256) % 2];
    Ipv4Addr::new(a, b, c, (i % 256) as u8)
}

/// `accounts` accounts of `per_account` names each (names `0..accounts*per_account`).
pub fn fqdn_accounts(
    seed: u64,
    accounts: usize,
    per_account: usize,
    slow_zone: Option<&str>,
) -> Vec<Account> {
    let mut rng = Rng::new(seed);
    (0..accounts)
        .map(|a| Account {
            name: format!("dyn{a:04}"),
            addresses: Vec::new(),
            fqdns: (0..per_account)
                .map(|k| host_name(a * per_account + k, slow_zone))
                .collect(),
            services: services(&mut rng),
        })
        .collect()
}

/// The classic ruleset, derived from pbxwall's own `restart --dry-run` text so that it is
/// exactly equivalent: the same table and input chain with the same rules in the same order,
/// except that every rule matching a set (`ip saddr @trusted_v4 accept`) becomes one rule per
/// element of that set (`ip saddr 10.0.0.0/8 accept`), and the verdict map lookup
/// (`ip6 saddr vmap @ranges_v6`) becomes, for every map element `R : jump C`, one rule per rule
/// of chain `C` with the source added (`udp dport 5060-5061 ip6 saddr R accept`): one rule
/// per address per port range, as iptables-era tools wrote them. No sets, maps or other
/// chains remain. Returns the text and its number of rules.
pub fn classic_from_dry_run(text: &str) -> (String, usize) {
    // Pass 1: the elements of every set and map, the lines of every chain.
    let mut elements: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut chains: Vec<(String, Vec<String>)> = Vec::new();
    let mut current_set: Option<String> = None;
    let mut in_chain = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("set ").or_else(|| t.strip_prefix("map ")) {
            let name = rest.trim_end_matches('{').trim().to_string();
            elements.insert(name.clone(), Vec::new());
            current_set = Some(name);
            continue;
        }
        if let Some(rest) = t.strip_prefix("chain ") {
            current_set = None;
            in_chain = true;
            chains.push((rest.trim_end_matches('{').trim().to_string(), Vec::new()));
            continue;
        }
        if t == "}" {
            current_set = None;
            in_chain = false;
            continue;
        }
        if let (Some(name), Some(list)) = (&current_set, t.strip_prefix("elements = {")) {
            let v = elements.get_mut(name).expect("set seen");
            v.extend(
                list.trim_end_matches('}')
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
            continue;
        }
        if in_chain && !t.is_empty() {
            chains.last_mut().expect("chain seen").1.push(t.to_string());
        }
    }
    // Pass 2: the chains no map jumps to, with every lookup expanded.
    let jumped: Vec<&str> = elements
        .values()
        .flatten()
        .filter_map(|e| e.split_once(" : jump ").map(|(_, c)| c))
        .collect();
    let chain_rules = |name: &str| -> &[String] {
        chains
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&[], |(_, r)| r.as_slice())
    };
    let mut out = String::from("table inet pbxwall {\n");
    let mut rules = 0usize;
    for (name, lines) in &chains {
        if jumped.contains(&name.as_str()) {
            continue;
        }
        let _ = writeln!(out, "\tchain {name} {{");
        for t in lines {
            if t.starts_with("type ") {
                let _ = writeln!(out, "\t\t{t}");
                continue;
            }
            let Some(at) = t.find('@') else {
                let _ = writeln!(out, "\t\t{t}");
                rules += 1;
                continue;
            };
            let name_end = t[at..].find(' ').map_or(t.len(), |e| at + e);
            let set = &t[at + 1..name_end];
            let members = elements
                .get(set)
                .unwrap_or_else(|| panic!("rule uses unknown set {set}: {t}"));
            if let Some(key) = t.strip_suffix(&format!(" vmap @{set}")) {
                // `ip6 saddr vmap @M` -> per element, the target chain's rules + the source.
                for e in members {
                    let (range, target) = e.split_once(" : jump ").expect("map element");
                    for r in chain_rules(target) {
                        let (matches, verdict) = r.rsplit_once(' ').unwrap_or(("", r));
                        let sep = if matches.is_empty() { "" } else { " " };
                        let _ = writeln!(out, "\t\t{matches}{sep}{key} {range} {verdict}");
                        rules += 1;
                    }
                }
            } else {
                for e in members {
                    let _ = writeln!(out, "\t\t{}{}{}", &t[..at], e, &t[name_end..]);
                    rules += 1;
                }
            }
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    (out, rules)
}

/// Number of set elements in a dry-run text.
pub fn element_count(text: &str) -> usize {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("elements = {"))
        .map(|l| l.matches(',').count() + 1)
        .sum()
}

/// Checks of this module that need neither root nor the network (run by `cargo test`).
pub fn self_check() {
    let a = accounts(7, 50, |r| 1 + r.below(4) as usize, 10);
    let b = accounts(7, 50, |r| 1 + r.below(4) as usize, 10);
    assert_eq!(a, b, "generation is deterministic");
    assert!(
        a.iter()
            .all(|x| !x.services.is_empty() && x.services.len() <= 3)
    );
    for acct in &a {
        for s in &acct.addresses {
            let net: ipnet::IpNet = s
                .parse()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(net.addr(), net.network(), "{s}: no host bits");
            let v6_bench: ipnet::Ipv6Net = "2001:db8::/40".parse().unwrap();
            if let ipnet::IpNet::V6(n) = net {
                assert!(!v6_bench.contains(&n.network()), "{s} avoids 2001:db8::/40");
            }
        }
    }
    let dry = "table inet pbxwall {\n\tset trusted_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 10.0.0.0/8 }\n\t}\n\n\tmap src_v6 {\n\t\ttype ipv6_addr : verdict\n\t\tflags interval\n\t\telements = { 2001:db8::1 : jump allow_sip-udp, 2001:db8::/120 : jump allow_all }\n\t}\n\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tiif \"lo\" accept\n\t\tip saddr @trusted_v4 accept\n\t\tip6 saddr vmap @src_v6\n\t\tcounter\n\t}\n\n\tchain allow_all {\n\t\taccept\n\t}\n\n\tchain allow_sip-udp {\n\t\tudp dport 5060-5061 accept\n\t\tudp dport 5160-5161 accept\n\t}\n}\n";
    let (classic, rules) = classic_from_dry_run(dry);
    assert_eq!(
        classic,
        "table inet pbxwall {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tiif \"lo\" accept\n\t\tip saddr 10.0.0.0/8 accept\n\t\tudp dport 5060-5061 ip6 saddr 2001:db8::1 accept\n\t\tudp dport 5160-5161 ip6 saddr 2001:db8::1 accept\n\t\tip6 saddr 2001:db8::/120 accept\n\t\tcounter\n\t}\n}\n"
    );
    assert_eq!(rules, 6, "{classic}");
    assert_eq!(element_count(dry), 3);
    assert_eq!(host_v6(3, 0).to_string(), "2001:db8:1::6");
    assert_eq!(host_v6(3, 1).to_string(), "2001:db8:1:1::6");
}
