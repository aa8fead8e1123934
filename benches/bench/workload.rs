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
/// exactly equivalent: the same table and chain, the same rules in the same order, except
/// that every rule matching a set (`ip saddr @sip_udp_v4`) becomes one rule per element of
/// that set (`ip saddr 203.0.113.7`), and there are no sets. Returns the text and its number
/// of rules.
pub fn classic_from_dry_run(text: &str) -> (String, usize) {
    let mut sets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut chains = String::new();
    let mut in_chain = false;
    let mut rules = 0usize;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("set ") {
            let name = rest.trim_end_matches('{').trim().to_string();
            sets.insert(name.clone(), Vec::new());
            current = Some(name);
            continue;
        }
        if let (Some(name), Some(list)) = (&current, t.strip_prefix("elements = {")) {
            let list = list.trim_end_matches('}');
            let v = sets.get_mut(name).expect("set seen");
            v.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
            continue;
        }
        if t.starts_with("chain ") {
            current = None;
            in_chain = true;
            chains.push_str(line);
            chains.push('\n');
            continue;
        }
        if !in_chain {
            continue;
        }
        if t == "}" {
            chains.push_str(line);
            chains.push('\n');
            in_chain = false;
            continue;
        }
        if t.starts_with("type ") || t.is_empty() {
            chains.push_str(line);
            chains.push('\n');
            continue;
        }
        match t.find('@') {
            Some(at) => {
                let name_end = t[at..].find(' ').map_or(t.len(), |e| at + e);
                let set = &t[at + 1..name_end];
                let elements = sets
                    .get(set)
                    .unwrap_or_else(|| panic!("rule uses unknown set {set}: {t}"));
                for e in elements {
                    let _ = writeln!(chains, "\t\t{}{}{}", &t[..at], e, &t[name_end..]);
                    rules += 1;
                }
            }
            None => {
                chains.push_str(line);
                chains.push('\n');
                rules += 1;
            }
        }
    }
    let out = format!("table inet pbxwall {{\n{chains}}}\n");
    (out, rules)
}

/// A what-if variant of a dry-run text: every interval set `X` keeps only its real ranges
/// and gets a sibling hash set `X_h` (no `flags interval`) with its single addresses; every
/// rule matching `@X` is preceded by the same rule matching `@X_h`. Same semantics.
pub fn split_sets_from_dry_run(text: &str) -> String {
    let mut out = String::new();
    let mut in_chain = false;
    let mut set: Option<(String, String)> = None; // (name, key type)
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("set ") {
            set = Some((rest.trim_end_matches('{').trim().to_string(), String::new()));
            continue;
        }
        if let Some((name, ty)) = &mut set {
            if let Some(k) = t.strip_prefix("type ") {
                *ty = k.to_string();
            } else if let Some(list) = t.strip_prefix("elements = {") {
                let all: Vec<&str> = list
                    .trim_end_matches('}')
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                let full = if ty.as_str() == "ipv4_addr" {
                    "/32"
                } else {
                    "/128"
                };
                let single = |e: &str| !e.contains('-') && (!e.contains('/') || e.ends_with(full));
                let singles: Vec<&str> = all
                    .iter()
                    .filter(|e| single(e))
                    .map(|e| e.split('/').next().unwrap_or(e))
                    .collect();
                let ranges: Vec<&str> = all.iter().filter(|e| !single(e)).copied().collect();
                let _ = writeln!(out, "\tset {name}_h {{\n\t\ttype {ty}");
                if !singles.is_empty() {
                    let _ = writeln!(out, "\t\telements = {{ {} }}", singles.join(", "));
                }
                let _ = writeln!(
                    out,
                    "\t}}\n\tset {name} {{\n\t\ttype {ty}\n\t\tflags interval"
                );
                if !ranges.is_empty() {
                    let _ = writeln!(out, "\t\telements = {{ {} }}", ranges.join(", "));
                }
                let _ = writeln!(out, "\t}}");
                set = None;
            } else if t == "}" {
                let _ = writeln!(
                    out,
                    "\tset {name}_h {{\n\t\ttype {ty}\n\t}}\n\tset {name} {{\n\t\ttype {ty}\n\t\tflags interval\n\t}}"
                );
                set = None;
            }
            continue;
        }
        if t.starts_with("chain ") {
            in_chain = true;
        }
        if in_chain && let Some(at) = t.find('@') {
            let end = t[at..].find(' ').map_or(t.len(), |e| at + e);
            let _ = writeln!(
                out,
                "\t\t{}{}_h{}",
                &t[..at + 1],
                &t[at + 1..end],
                &t[end..]
            );
        }
        if t.starts_with("table ") || in_chain {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A what-if variant of a dry-run text for `accounts`: instead of one set per service and
/// family, looked up by one rule per service port range, ONE interval verdict map per family
/// from source to a chain per combination of services (`ip6 saddr vmap @src_v6`), whose
/// rules accept that combination's ports. Every address is then one element, and a packet
/// does one big lookup instead of one per full-access/service/RTP set. Overlapping sources
/// (rare in the v6 part; the v4 part of the workloads overlaps a lot) keep the first one,
/// which is fine for a what-if. Returns the text and its number of map elements.
pub fn vmap_from_dry_run(text: &str, accounts: &[Account]) -> (String, usize) {
    let mut sets_text = String::new(); // the trusted sets, copied
    let mut in_set: Option<bool> = None; // Some(keep) while inside a set block
    let mut in_chain = false;
    let mut before: Vec<String> = Vec::new(); // input chain lines before the vmap rules
    let mut after: Vec<String> = Vec::new();
    let mut replaced = false;
    let mut ports: BTreeMap<String, Vec<String>> = BTreeMap::new(); // set base -> port parts
    let mut header = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("set ") {
            let keep = rest.starts_with("trusted_");
            in_set = Some(keep);
        }
        if let Some(keep) = in_set {
            if keep {
                sets_text.push_str(line);
                sets_text.push('\n');
            }
            if t == "}" {
                in_set = None;
            }
            continue;
        }
        if t.starts_with("chain ") {
            in_chain = true;
            continue;
        }
        if !in_chain || t == "}" || t.is_empty() {
            continue;
        }
        if t.starts_with("type ") {
            header = line.to_string();
            continue;
        }
        if let Some(at) = t.find('@')
            && !t[at..].starts_with("@trusted_")
        {
            let end = t[at..].find(' ').map_or(t.len(), |e| at + e);
            let set = &t[at + 1..end];
            let base = set
                .trim_end_matches("_v4")
                .trim_end_matches("_v6")
                .to_string();
            let cut = t
                .find("ip saddr")
                .or_else(|| t.find("ip6 saddr"))
                .unwrap_or(0);
            let port = t[..cut].trim().to_string();
            let v = ports.entry(base).or_default();
            if !v.contains(&port) {
                v.push(port);
            }
            replaced = true;
            continue;
        }
        if replaced {
            after.push(line.to_string());
        } else {
            before.push(line.to_string());
        }
    }
    let rtp = ports.contains_key("rtp");
    let mut combos: Vec<Vec<String>> = Vec::new();
    let mut v4: Vec<(u128, u128, String, usize)> = Vec::new();
    let mut v6: Vec<(u128, u128, String, usize)> = Vec::new();
    for a in accounts {
        let mut bases: Vec<String> = a.services.iter().map(|s| s.replace('-', "_")).collect();
        if rtp {
            bases.push("rtp".into());
        }
        bases.sort();
        let idx = match combos.iter().position(|c| *c == bases) {
            Some(i) => i,
            None => {
                combos.push(bases);
                combos.len() - 1
            }
        };
        for addr in &a.addresses {
            let net: ipnet::IpNet = addr
                .parse()
                .or_else(|_| addr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .expect("generated address parses");
            let key = if net.prefix_len() == net.max_prefix_len() {
                net.addr().to_string()
            } else {
                net.to_string()
            };
            match net {
                ipnet::IpNet::V4(n) => v4.push((
                    u32::from(n.network()).into(),
                    u32::from(n.broadcast()).into(),
                    key,
                    idx,
                )),
                ipnet::IpNet::V6(n) => {
                    v6.push((n.network().into(), n.broadcast().into(), key, idx))
                }
            }
        }
    }
    let mut out = String::from("table inet pbxwall {\n");
    out.push_str(&sets_text);
    for (i, bases) in combos.iter().enumerate() {
        let _ = writeln!(out, "\tchain via_{i} {{");
        for b in bases {
            for p in ports.get(b).map(Vec::as_slice).unwrap_or(&[]) {
                let _ = writeln!(
                    out,
                    "\t\t{}accept",
                    if p.is_empty() {
                        String::new()
                    } else {
                        format!("{p} ")
                    }
                );
            }
        }
        let _ = writeln!(out, "\t}}");
    }
    let mut elements = 0;
    for (family, key, list) in [("ip", "ipv4_addr", &mut v4), ("ip6", "ipv6_addr", &mut v6)] {
        list.sort();
        let mut kept: Vec<String> = Vec::new();
        let mut last_end: Option<u128> = None;
        for (start, end, text, idx) in list.iter() {
            if last_end.is_some_and(|e| *start <= e) {
                continue;
            }
            last_end = Some(*end);
            kept.push(format!("{text} : jump via_{idx}"));
        }
        elements += kept.len();
        let name = if family == "ip" { "src_v4" } else { "src_v6" };
        let _ = writeln!(
            out,
            "\tmap {name} {{\n\t\ttype {key} : verdict\n\t\tflags interval"
        );
        if !kept.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", kept.join(", "));
        }
        let _ = writeln!(out, "\t}}");
    }
    out.push_str("\tchain input {\n");
    out.push_str(&header);
    out.push('\n');
    for l in &before {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str("\t\tip saddr vmap @src_v4\n\t\tip6 saddr vmap @src_v6\n");
    for l in &after {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str("\t}\n}\n");
    (out, elements)
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
    let dry = "table inet pbxwall {\n\tset a_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 192.0.2.1, 192.0.2.8/29 }\n\t}\n\n\tset e_v6 {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t}\n\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tiif \"lo\" accept\n\t\tudp dport 5060-5061 ip saddr @a_v4 accept\n\t\tip6 saddr @e_v6 accept\n\t\tcounter\n\t}\n}\n";
    let (classic, rules) = classic_from_dry_run(dry);
    assert_eq!(rules, 4, "{classic}");
    assert!(classic.contains("\t\tudp dport 5060-5061 ip saddr 192.0.2.8/29 accept\n"));
    assert!(!classic.contains('@') && !classic.contains("set "));
    assert_eq!(element_count(dry), 2);
    let split = split_sets_from_dry_run(dry);
    assert!(
        split.contains("\tset a_v4_h {\n\t\ttype ipv4_addr\n\t\telements = { 192.0.2.1 }\n\t}\n"),
        "{split}"
    );
    assert!(
        split.contains("\t\tflags interval\n\t\telements = { 192.0.2.8/29 }\n"),
        "{split}"
    );
    assert!(split.contains("\t\tudp dport 5060-5061 ip saddr @a_v4_h accept\n\t\tudp dport 5060-5061 ip saddr @a_v4 accept\n"), "{split}");
    assert!(
        split.contains("\tset e_v6_h {\n\t\ttype ipv6_addr\n\t}\n"),
        "{split}"
    );
    assert!(
        split.starts_with("table inet pbxwall {\n") && split.ends_with("\t}\n}\n"),
        "{split}"
    );
    let accts = [Account {
        name: "a".into(),
        addresses: vec![
            "192.0.2.1".into(),
            "192.0.2.0/29".into(),
            "2001:db8:100::/48".into(),
        ],
        fqdns: vec![],
        services: vec!["sip-udp"],
    }];
    let dry2 = dry
        .replace("@a_v4", "@sip_udp_v4")
        .replace("@e_v6", "@all_v6");
    let (vmap, n) = vmap_from_dry_run(&dry2, &accts);
    assert_eq!(n, 2, "{vmap}");
    assert!(
        vmap.contains("\tchain via_0 {\n\t\tudp dport 5060-5061 accept\n\t}\n"),
        "{vmap}"
    );
    assert!(
        vmap.contains("elements = { 192.0.2.0/29 : jump via_0 }"),
        "{vmap}"
    );
    assert!(vmap.contains("\t\tiif \"lo\" accept\n\t\tip saddr vmap @src_v4\n\t\tip6 saddr vmap @src_v6\n\t\tcounter\n"), "{vmap}");
    assert_eq!(host_v6(3, 0).to_string(), "2001:db8:1::6");
    assert_eq!(host_v6(3, 1).to_string(), "2001:db8:1:1::6");
}
