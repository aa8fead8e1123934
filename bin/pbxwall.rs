//! `pbxwall COMMAND`: every pbxwall command in one binary.
fn main() -> std::process::ExitCode {
    pbxwall::cli::main::<pbxwall::cli::PbxwallCli>()
}
