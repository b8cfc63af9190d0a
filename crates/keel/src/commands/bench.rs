//! `keel bench`: measures Keel's own speed and size, reproducibly.

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Bench {}

pub fn run(b: Bench) -> anyhow::Result<ExitCode> {
    match b {}
}
