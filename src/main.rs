//! `pico`: the one binary of picocenter-rs. A thin shell over the library crates: it parses the
//! command line, loads `pico.toml`, and calls into `pagestore`, `pager`, `worker` and `hub`.

mod alloc;
mod cli;
mod config;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: alloc::LargeMapped = alloc::LargeMapped;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    cli::init_tracing(args.verbose, args.is_daemon());
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
