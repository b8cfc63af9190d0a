//! `keel`: the command line. Each subcommand lives in `commands/` and only parses arguments,
//! calls the libraries and prints.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod output;

/// Rebuild Linux servers from bare metal to their production state, and watch their
/// configuration in between.
#[derive(Debug, Parser)]
#[command(name = "keel", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture a profile of this system, or of a system mounted under --root.
    Capture(commands::capture::Args),
    /// Print a profile.
    Show(commands::show::Args),
    /// Compare two profiles, files or stored ones (exit 0: same, 1: different, 2: error).
    Diff(commands::diff::Args),
    /// Create a recovery key pair: secrets in profiles are encrypted to its public half.
    Keygen(commands::keygen::Args),
    /// Measure Keel's own speed and size.
    #[command(subcommand)]
    Bench(commands::bench::Bench),
    /// Alert rules: test them on profiles offline, check them, manage a server's rules.
    #[command(subcommand)]
    Rules(commands::rules::Rules),
    /// Start here: run the server on its embedded defaults and watch this machine with it.
    Up(commands::up::Args),
    /// Run the central server: agents send it profiles; it keeps history and diffs.
    Server(commands::server::Args),
    /// Enroll this machine with a server, and send it profiles.
    #[command(subcommand)]
    Agent(commands::agent::Agent),
    /// List the hosts a server knows and their state; set their schedules, pause, retire.
    Hosts(commands::hosts::Args),
    /// List a server's alerts; acknowledge or resolve them; read the delivery log.
    Alerts(commands::alerts::Args),
    /// List a host's profiles stored on a server, newest first.
    Profiles(commands::profiles::Args),
    /// The rescue environment: `keel rescue build` makes it; `keel rescue` runs inside it,
    /// lists the disks and runs the recovery kit it finds.
    Rescue(commands::rescue::Args),
    /// Rebuild a profiled system: plan and apply its storage on other disks, build its root
    /// filesystem, verify the result.
    #[command(subcommand)]
    Recover(commands::recover::Recover),
    /// Back out selected configuration changes: locally from a profile file, or through a
    /// server (planned, approved, then applied by the host's agent).
    Rollback(commands::rollback::Args),
    /// The web UI's accounts: add, list, delete (on the server's data directory).
    Users(commands::users::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Capture(a) => commands::capture::run(&a),
        Command::Show(a) => commands::show::run(&a),
        Command::Diff(a) => commands::diff::run(&a),
        Command::Keygen(a) => commands::keygen::run(&a),
        Command::Bench(b) => commands::bench::run(b),
        Command::Up(a) => commands::up::run(&a),
        Command::Server(a) => commands::server::run(&a),
        Command::Agent(a) => commands::agent::run(&a),
        Command::Rules(r) => commands::rules::run(&r),
        Command::Hosts(a) => commands::hosts::run(&a),
        Command::Alerts(a) => commands::alerts::run(&a),
        Command::Profiles(a) => commands::profiles::run(&a),
        Command::Rescue(a) => commands::rescue::run(&a),
        Command::Recover(r) => commands::recover::run(&r),
        Command::Rollback(a) => commands::rollback::run(&a),
        Command::Users(a) => commands::users::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            output::error(&e);
            ExitCode::from(2)
        }
    }
}
