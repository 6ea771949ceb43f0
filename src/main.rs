//! `kvs-dl`: parse the command line, run it, turn the result into an exit code. Errors are
//! printed here and nowhere else.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let invocation = kvs_dl::cli::Invocation::parse();
    match kvs_dl::run::run(invocation) {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.render());
            ExitCode::from(e.exit_code())
        }
    }
}
