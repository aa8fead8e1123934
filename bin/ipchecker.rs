//! `ipchecker`: see `ipchecker --help` and man/ipchecker.8.
fn main() -> std::process::ExitCode {
    pbxwall::cli::main::<pbxwall::cli::IpcheckerCli>()
}
