//! `keel users`: the web UI's accounts, managed on the server's data directory (like `keel
//! server` itself, so it works before any account exists and needs no token).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use keel_store::{Role, SqliteStore, UserStore};

use super::client::Format;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: UsersCommand,
    /// The server's data directory.
    #[arg(long, env = "KEEL_DATA", default_value = "./keel-data", global = true)]
    data: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum UsersCommand {
    /// Make an account; the password is read from standard input (first line) or a file.
    Add {
        /// Login name.
        name: String,
        /// What the account may do.
        #[arg(long, value_parser = ["admin", "read-only"], default_value = "read-only")]
        role: String,
        /// Read the password from this file (first line) instead of standard input.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Change the password and role of an existing account instead (ends its sessions).
        #[arg(long)]
        update: bool,
    },
    /// List the accounts.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Delete an account and end its sessions.
    Delete {
        /// Login name.
        name: String,
    },
}

fn open(data: &Path) -> anyhow::Result<SqliteStore> {
    let db = data.join("keel.db");
    if !db.is_file() {
        bail!(
            "no server database at {}\nhint: pass the server's data directory with --data (or KEEL_DATA), or start `keel server` once to create it",
            db.display()
        );
    }
    Ok(SqliteStore::open(&db)?)
}

fn read_password(file: Option<&Path>) -> anyhow::Result<String> {
    let line = if let Some(p) = file {
        std::fs::read_to_string(p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if line.chars().count() < 8 {
        bail!("the password must have at least 8 characters\nhint: pipe it in, e.g. `printf '%s\\n' \"$PASSWORD\" | keel users add NAME`, or use --password-file");
    }
    Ok(line)
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let store = open(&args.data)?;
    let mut out = std::io::stdout().lock();
    match &args.command {
        UsersCommand::Add {
            name,
            role,
            password_file,
            update,
        } => {
            if name.is_empty() || name.len() > 64 || name.chars().any(char::is_whitespace) {
                bail!("a user name is 1 to 64 characters without spaces");
            }
            let role = Role::parse(role).context("role must be admin or read-only")?;
            let password = read_password(password_file.as_deref())?;
            let phc = keel_server::hash_password(&password).map_err(anyhow::Error::msg)?;
            if *update {
                if !store.update_user(name, role, &phc)? {
                    bail!("no user named {name}\nhint: `keel users list` shows the accounts");
                }
                writeln!(out, "user {name} updated ({})", role.as_str())?;
            } else {
                store
                    .add_user(name, role, &phc, keel_server::now_ms())
                    .map_err(|e| {
                        anyhow::anyhow!("{e}\nhint: add --update to change its password or role")
                    })?;
                writeln!(out, "user {name} added ({})", role.as_str())?;
            }
        }
        UsersCommand::List { format } => {
            let users = store.users()?;
            match format {
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&users)?)?,
                Format::Text => {
                    if users.is_empty() {
                        writeln!(
                            out,
                            "no users; add one with `keel users add NAME --role admin`"
                        )?;
                    }
                    for u in users {
                        writeln!(
                            out,
                            "{:<24} {:<10} created {}",
                            u.name,
                            u.role.as_str(),
                            crate::output::rfc3339(u.created_at)
                        )?;
                    }
                }
            }
        }
        UsersCommand::Delete { name } => {
            if !store.delete_user(name)? {
                bail!("no user named {name}\nhint: `keel users list` shows the accounts");
            }
            writeln!(out, "user {name} deleted")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes the first UI account, `admin`, with a random password, when the data directory has
/// none: returns the name and the password, to be shown once.
pub fn first_admin(data: &Path) -> anyhow::Result<Option<(String, String)>> {
    let store = open(data)?;
    if !store.users()?.is_empty() {
        return Ok(None);
    }
    let password = keel_server::random_token(12);
    let phc = keel_server::hash_password(&password).map_err(anyhow::Error::msg)?;
    store.add_user("admin", Role::Admin, &phc, keel_server::now_ms())?;
    Ok(Some(("admin".into(), password)))
}
