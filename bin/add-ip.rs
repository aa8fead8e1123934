//! `add-ip`: see `add-ip --help` and man/add-ip.8.
fn main() -> std::process::ExitCode {
    pbxwall::cli::main::<pbxwall::cli::AddIpCli>()
}
