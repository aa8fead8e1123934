//! `enable-trusted-providers`: see `enable-trusted-providers --help` and README.md.
fn main() -> std::process::ExitCode {
    pbxwall::cli::main::<pbxwall::cli::EnableTrustedProvidersCli>()
}
