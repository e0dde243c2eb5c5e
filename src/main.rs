//! `pytorchjob-guard`: parse the command line, run the command, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use pytorchjob_guard::cli::{self, Cli};

fn main() -> ExitCode {
    cli::run(Cli::parse())
}
