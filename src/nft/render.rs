//! The ruleset IR printed in nft syntax, as `nft list table inet pbxwall` shows it.
//!
//! The text comes from the IR's own `Display` impls, which live beside the IR in
//! [`crate::ruleset`]; this module adds the views built on them and the normalisation that
//! compares them with `nft list`. `restart --dry-run` prints [`render`], and the text loads
//! with `nft -f`. A root test applies the same IR through netlink and compares `nft list`
//! with this text (normalised: counter values and line wrapping aside), so the two views
//! cannot drift apart.

use crate::ruleset::{Ruleset, Set};

/// The whole table as nft text.
///
/// The text is written into a buffer sized up front for the largest elements (IPv6 ranges
/// with jumps): growing by doubling would copy it and hold both copies, twice the text in
/// memory for a large set, while the untouched tail of a generous buffer costs no memory.
pub fn render(ruleset: &Ruleset) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(64 * 1024 + 112 * ruleset.element_count());
    let _ = write!(text, "{ruleset}");
    text
}

/// The table without set elements: what must stay the same for an address change to be
/// applied as element updates alone.
pub fn skeleton(ruleset: &Ruleset) -> String {
    let bare = Ruleset {
        sets: ruleset
            .sets
            .iter()
            .map(|s| Set {
                name: s.name.clone(),
                family: s.family,
                kind: s.kind,
                elements: Vec::new(),
                dynamic: s.dynamic.as_ref().map(|d| crate::ruleset::Dynamic {
                    restore: Vec::new(),
                    ..d.clone()
                }),
            })
            .collect(),
        chains: ruleset.chains.clone(),
    };
    bare.to_string()
}

/// Normalises nft text for comparison: drops counter values and blank lines, collapses
/// whitespace, joins wrapped element lists, sorts elements within each list, and sorts the
/// set and map blocks, then the chain blocks, by name (the kernel lists them in creation
/// order, and `restart` keeps sets and chains that already exist in place).
pub fn normalize(text: &str) -> String {
    let mut lines = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            continue;
        }
        if !pending.is_empty() || line.starts_with("elements = {") {
            pending.push_str(&line);
            pending.push(' ');
            if line.ends_with('}') {
                lines.push(normalize_elements(&pending));
                pending.clear();
            }
            continue;
        }
        lines.push(strip_counter_values(&line));
    }
    // Blocks ("set NAME {", "map NAME {" or "chain NAME {" to its "}") sorted by name, sets
    // and maps first, in place of the first block.
    let mut sets: Vec<Vec<String>> = Vec::new();
    let mut chains: Vec<Vec<String>> = Vec::new();
    let mut out: Vec<String> = Vec::new();
    let mut first_block_at = None;
    let mut iter = lines.into_iter();
    while let Some(line) = iter.next() {
        let is_set = line.starts_with("set ") || line.starts_with("map ");
        if (is_set || line.starts_with("chain ")) && line.ends_with('{') {
            first_block_at.get_or_insert(out.len());
            let mut block = vec![line];
            for l in iter.by_ref() {
                let end = l == "}";
                block.push(l);
                if end {
                    break;
                }
            }
            if is_set {
                sets.push(block);
            } else {
                chains.push(block);
            }
        } else {
            out.push(line);
        }
    }
    let key = |b: &Vec<String>| b[0].split(' ').nth(1).unwrap_or_default().to_owned();
    sets.sort_by_key(key);
    chains.sort_by_key(key);
    let at = first_block_at.unwrap_or(out.len());
    out.splice(at..at, sets.into_iter().chain(chains).flatten());
    out.join("\n")
}

fn normalize_elements(line: &str) -> String {
    let inner = line
        .trim()
        .trim_start_matches("elements = {")
        .trim_end_matches('}');
    let mut items: Vec<&str> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    items.sort_unstable();
    format!("elements = {{ {} }}", items.join(", "))
}

fn strip_counter_values(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        out.push(words[i]);
        if words[i] == "counter" && words.get(i + 1) == Some(&"packets") {
            i += 5; // counter packets N bytes M
            continue;
        }
        i += 1;
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::compile::tests::{account, joe_sip_udp, shipped_profiles, trusting};
    use crate::model::RtpFrom;

    #[test]
    fn golden_ruleset() {
        let ps = shipped_profiles();
        let settings = trusting("192.0.2.0/28");
        assert_eq!(settings.rtp.from, RtpFrom::Any);
        let accounts = [
            joe_sip_udp(),
            account("all", &["198.51.100.0/28"], &[], &["0"]),
        ];
        let mut accounts = accounts.to_vec();
        accounts[1].services = vec!["all".into()];
        let text = render(&compile(&settings, &ps, &accounts, &Default::default()));
        let want = r#"table inet pbxwall {
	set trusted_v4 {
		type ipv4_addr
		flags interval
		elements = { 192.0.2.0/28 }
	}

	set trusted_v6 {
		type ipv6_addr
		flags interval
	}

	map hosts_v4 {
		type ipv4_addr : verdict
		elements = { 203.0.113.7 : jump allow_sip-udp }
	}

	map ranges_v4 {
		type ipv4_addr : verdict
		flags interval
		elements = { 198.51.100.0/28 : jump allow_all }
	}

	map hosts_v6 {
		type ipv6_addr : verdict
	}

	map ranges_v6 {
		type ipv6_addr : verdict
		flags interval
		elements = { 2001:db8::/48 : jump allow_sip-udp }
	}

	set ban_v4 {
		type ipv4_addr
		size 262143
		flags dynamic,timeout
	}

	set ban_v6 {
		type ipv6_addr
		size 262143
		flags dynamic,timeout
	}

	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		fib saddr type local drop
		ip saddr @ban_v4 drop
		ip6 saddr @ban_v6 drop
		ct state established,related accept
		ct state invalid drop
		icmp type destination-unreachable accept
		icmp type time-exceeded accept
		icmp type parameter-problem accept
		icmpv6 type destination-unreachable accept
		icmpv6 type packet-too-big accept
		icmpv6 type time-exceeded accept
		icmpv6 type parameter-problem accept
		icmpv6 type mld-listener-query accept
		icmpv6 type nd-router-advert accept
		icmpv6 type nd-neighbor-solicit accept
		icmpv6 type nd-neighbor-advert accept
		ip saddr @trusted_v4 accept
		ip6 saddr @trusted_v6 accept
		ip saddr vmap @hosts_v4
		ip saddr vmap @ranges_v4
		ip6 saddr vmap @hosts_v6
		ip6 saddr vmap @ranges_v6
		udp dport 10000-20000 accept
		limit rate 10/minute log prefix "pbxwall drop: "
		counter
	}

	chain allow_all {
		accept
	}

	chain allow_sip-udp {
		udp dport 5060-5061 accept
		udp dport 5160-5161 accept
	}
}
"#;
        if text != want {
            panic!("rendered:\n{text}\nexpected:\n{want}");
        }
    }

    #[test]
    fn normalize_orders_set_blocks_by_name() {
        let a = "table inet t {\n\tset b {\n\t\ttype ipv4_addr\n\t}\n\tmap a {\n\t\ttype ipv6_addr : verdict\n\t}\n\tchain input {\n\t}\n\tchain allow_z {\n\t}\n\tchain allow_a {\n\t}\n}\n";
        let b = "table inet t {\n\tmap a {\n\t\ttype ipv6_addr : verdict\n\t}\n\tset b {\n\t\ttype ipv4_addr\n\t}\n\tchain allow_a {\n\t}\n\tchain input {\n\t}\n\tchain allow_z {\n\t}\n}\n";
        assert_eq!(normalize(a), normalize(b));
        assert!(normalize(a).starts_with("table inet t {\nmap a {"));
        assert!(normalize(a).contains("chain allow_a {\n}\nchain allow_z {\n}\nchain input {"));
    }

    #[test]
    fn normalize_ignores_wrapping_order_and_counters() {
        let a = "table inet t {\n\tset s {\n\t\telements = { 192.0.2.9, 192.0.2.1,\n\t\t\t     192.0.2.5 }\n\t}\n\n\tchain c {\n\t\tcounter packets 12 bytes 3400\n\t}\n}\n";
        let b = "table inet t {\n  set s {\n    elements = { 192.0.2.1, 192.0.2.5, 192.0.2.9 }\n  }\n  chain c {\n    counter\n  }\n}";
        assert_eq!(normalize(a), normalize(b));
    }
}
