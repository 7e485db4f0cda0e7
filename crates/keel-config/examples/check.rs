//! Checks a config file and prints what Keel would run with, or every
//! error found: `cargo run -p keel-config --example check -- keel.toml`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: check <keel.toml>");
        return ExitCode::from(2);
    };
    match keel_config::Config::load(&path) {
        Ok(config) => {
            println!("{config:#?}");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}
