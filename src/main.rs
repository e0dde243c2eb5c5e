//! `pytorchjob-guard`: parse the command line, run the command, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use pytorchjob_guard::cli::{self, Cli};

/// The allocator of the whole process (see `Cargo.toml` for why).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    cli::run(Cli::parse())
}
