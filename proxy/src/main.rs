//! `gatehouse`: the gateway and its operator commands.

mod config;
mod demo;
mod init;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Gatehouse: a policy-enforcing, recording PostgreSQL gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a ledger, its signing key and its verifier key in a directory.
    Init {
        /// Directory to create (must not already hold a Gatehouse setup).
        #[arg(long)]
        dir: PathBuf,
        /// The log's origin line, also the key name (default: gatehouse/<dir name>).
        #[arg(long)]
        origin: Option<String>,
    },
    /// Run the incident demo and leave its ledger and evidence in a directory.
    Demo {
        /// Directory for the demo's files (default: ./gatehouse-demo-<time>).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init { dir, origin } => init::init(&dir, origin.as_deref()).map(|out| {
            eprintln!(
                "Initialised {}.\nThe signing key is readable by you only; the verifier key (below, and in {}) is for auditors.",
                out.config.display(),
                dir.join(init::VERIFIER_KEY).display()
            );
            println!("{}", out.verifier_key);
        }),
        Command::Demo { dir } => demo::run(dir).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
