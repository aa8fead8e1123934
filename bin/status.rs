//! `status`: see `status --help` and man/status.8.
fn main() -> std::process::ExitCode {
    pbxwall::cli::main::<pbxwall::cli::StatusCli>()
}
