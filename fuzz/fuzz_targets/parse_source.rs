//! `model::parse_source`: never panics; what it accepts prints as text that parses back to
//! the same network; without `force` nothing wider than /8 (IPv4) or /32 (IPv6) passes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbxwall::model::parse_source;
use pbxwall::store::display_net;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for force in [false, true] {
        if let Ok(net) = parse_source(&text, force) {
            let shown = display_net(&net);
            let again = parse_source(&shown, true)
                .unwrap_or_else(|e| panic!("accepted {net} does not re-parse as {shown:?}: {e}"));
            assert_eq!(net, again);
            if !force {
                let min = if net.addr().is_ipv4() { 8 } else { 32 };
                assert!(net.prefix_len() >= min, "{net} accepted without --force");
            }
        }
    }
});
