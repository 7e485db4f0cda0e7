//! `keel`: the daemon (`keel serve`) and the operator's command line.
#![forbid(unsafe_code)]

mod delivery;
mod envelope;
mod events;
mod http;
mod ingress;
mod queue;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keel, a mail transfer agent for high-volume sending.
#[derive(Parser)]
#[command(name = "keel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the MTA (SMTP and HTTP listeners, queue, delivery) in the foreground.
    Serve {
        /// TOML configuration file; without it Keel runs on its embedded defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and print every error with its file, line and key.
    CheckConfig {
        /// The TOML file to check.
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve::main(config),
        Command::CheckConfig { path } => match keel_config::Config::load(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(1)
            }
        },
    }
}
