//! `del-acct`: see `del-acct --help` and man/del-acct.8.
fn main() -> std::process::ExitCode {
    pbxwall::cli::main::<pbxwall::cli::DelAcctCli>()
}
