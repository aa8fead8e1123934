//! Marks builds made as root with `cfg(pbxwall_root)`, so tests that need root are
//! `#[cfg_attr(not(pbxwall_root), ignore = "needs root")]`: counted as ignored (skipped),
//! never as passed, when built without root.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(pbxwall_root)");
    println!("cargo::rerun-if-changed=build.rs");
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned());
    if uid.as_deref() == Some("0") {
        println!("cargo::rustc-cfg=pbxwall_root");
    }
}
