//! `add-fqdn`: see `add-fqdn --help` and man/add-fqdn.8.
fn main() -> std::process::ExitCode {
    pbxwall::cli::main::<pbxwall::cli::AddFqdnCli>()
}
