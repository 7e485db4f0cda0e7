//! `keel`: the daemon (`keel serve`) and the operator's command line.
#![forbid(unsafe_code)]

mod api_messages;
mod cli;
mod dashboard;
mod delivery;
mod dkim_cli;
mod envelope;
mod events;
mod http;
mod ingress;
mod logs_cli;
mod metrics;
mod passwd;
mod queue;
mod readiness;
mod serve;
mod top;

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
        /// Print `{"ok": bool, "errors": [{file, line, column, key, message}]}`.
        #[arg(long)]
        json: bool,
    },
    /// Read a password on standard input and print its argon2id hash for [[smtp.user]].
    Passwd {
        /// Print `{"password_hash": "..."}`.
        #[arg(long)]
        json: bool,
    },
    /// DKIM signing keys: `keel dkim keygen --domain D --selector S`.
    Dkim {
        #[command(subcommand)]
        command: dkim_cli::DkimCommand,
    },
    /// Show the busiest scheduled and ready queues, with limits and suspensions.
    Queue {
        /// How many of the busiest queues to show (0: all).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        api: cli::Api,
    },
    /// Stop delivering to a domain, site, egress source, campaign or tenant (mail stays queued).
    Suspend {
        #[command(flatten)]
        target: cli::Target,
        /// For how long (e.g. "30m", "2h"); default: until resumed.
        #[arg(long)]
        duration: Option<String>,
        /// Why, for the queue summary and logs.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        api: cli::Api,
    },
    /// Make the running daemon re-read its configuration file (like SIGHUP). On an error the
    /// running configuration stays in force and the errors are printed.
    Reload {
        #[command(flatten)]
        api: cli::Api,
    },
    /// Lift a suspension.
    Resume {
        #[command(flatten)]
        target: cli::Target,
        #[command(flatten)]
        api: cli::Api,
    },
    /// Fail and remove queued mail for a domain, site, campaign or tenant (AdminBounce events).
    Bounce {
        #[command(flatten)]
        target: cli::Target,
        /// Only count what would be bounced.
        #[arg(long)]
        dry_run: bool,
        /// Why, recorded in each AdminBounce event.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        api: cli::Api,
    },
    /// Print the event log (rotated and live files, oldest first), filtered; --follow tails it.
    Logs(logs_cli::LogsArgs),
    /// A live view of rates, queues, suspensions and shaping actions, like `top` (q quits).
    Top(top::TopArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve::main(config),
        Command::Passwd { json } => passwd::main(json),
        Command::Dkim { command } => dkim_cli::main(command),
        Command::Queue { limit, api } => cli::queue(api, limit),
        Command::Suspend {
            target,
            duration,
            reason,
            api,
        } => cli::suspend(api, target, duration, reason),
        Command::Resume { target, api } => cli::resume(api, target),
        Command::Reload { api } => cli::reload(api),
        Command::Bounce {
            target,
            dry_run,
            reason,
            api,
        } => cli::bounce(api, target, dry_run, reason),
        Command::Logs(args) => logs_cli::main(args),
        Command::Top(args) => top::main(args),
        Command::CheckConfig { path, json } => match keel_config::Config::load(&path) {
            Ok(_) if json => {
                println!("{}", serde_json::json!({ "ok": true, "errors": [] }));
                ExitCode::SUCCESS
            }
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(errors) if json => {
                let list: Vec<serde_json::Value> = errors
                    .0
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "file": e.file, "line": e.line, "column": e.column,
                            "key": e.key, "message": e.message,
                        })
                    })
                    .collect();
                println!("{}", serde_json::json!({ "ok": false, "errors": list }));
                ExitCode::from(1)
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(1)
            }
        },
    }
}
