//! `restart`: see `restart --help` and man/restart.8.
fn main() -> std::process::ExitCode {
    pbxwall::cli::main::<pbxwall::cli::RestartCli>()
}
