//! `keel keygen`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use age::secrecy::ExposeSecret;
use anyhow::{bail, Context};

use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the recovery identity (secret key); keep it offline.
    #[arg(long, short)]
    output: PathBuf,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if args.output.exists() {
        bail!(
            "{} already exists: refusing to overwrite a recovery key\nhint: choose another path; losing a recovery key loses every secret encrypted to it",
            args.output.display()
        );
    }
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    let body = format!(
        "# Keel recovery identity: decrypts the secrets in profiles. Keep it offline.\n# public key: {public}\n{}\n",
        identity.to_string().expose_secret()
    );
    output::write_atomic(&args.output, body.as_bytes(), 0o600)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{public}").context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}
