//! `keel up`: the whole of Keel on one machine, on its embedded defaults. Starts the server
//! (SQLite in `./keel-data`, HTTPS on 127.0.0.1:8443), enrolls this machine with an agent
//! whose state lives in the data directory, and captures on a short schedule, printing each
//! profile as it is stored and what changed since the one before.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use keel_server::TokenKind;

use super::client::{Client, ServerArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory: the database, the CA, and this machine's agent state.
    #[arg(long, env = "KEEL_DATA", default_value = "./keel-data")]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "KEEL_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Time between this machine's captures.
    #[arg(long, default_value = "30s")]
    every: String,
    /// Root directory of the system to profile.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// age public key (`age1…`) that secrets are encrypted to.
    #[arg(long, env = "KEEL_RECOVERY_KEY")]
    recovery_key: Option<String>,
    /// Stop after this many captures (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    count: u64,
}

/// Prints a line at once (the output is a live log).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The environment file that points the admin commands at this server.
fn write_env(data: &Path, url: &str, token: &str) -> anyhow::Result<PathBuf> {
    let path = data.join("keel.env");
    let ca = std::fs::canonicalize(data.join("ca.pem")).context("the server's ca.pem")?;
    let text = format!(
        "# Source this file to use the admin commands (keel hosts, keel alerts, ...).\n\
         export KEEL_SERVER={url}\nexport KEEL_TOKEN={token}\nexport KEEL_CA={}\n",
        ca.display()
    );
    crate::output::write_atomic(&path, text.as_bytes(), 0o600)?;
    Ok(path)
}

fn read_env_token(data: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data.join("keel.env")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("export KEEL_TOKEN="))
        .map(str::to_string)
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let schedule = keel_schedule::Schedule::interval(&args.every, "1m")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let mut config = keel_server::Config::new(&args.data, args.listen);
        let settings_file = args.data.join("keel-server.toml");
        if settings_file.exists() {
            config.settings = keel_server::Settings::load(&settings_file)?;
        }
        let server = keel_server::Server::start(&config).await?;
        let url = format!("https://{}", server.addr);
        say(&format!(
            "keel server listening on {url} (data in {})",
            args.data.display()
        ));
        // The admin token: the one made on first start, the one kept from an earlier run,
        // or a new one.
        let admin = match (&server.first_start, read_env_token(&args.data)) {
            (Some(first), _) => first.admin_token.clone(),
            (None, Some(kept)) => kept,
            (None, None) => server.issue_token(TokenKind::Admin, "keel up")?,
        };
        let env = write_env(&args.data, &url, &admin)?;
        say(&format!(
            "admin commands: `. {}` then `keel hosts`, `keel profiles HOST`, `keel alerts`",
            env.display()
        ));
        match super::users::first_admin(&args.data)? {
            Some((name, password)) => say(&format!(
                "web UI: {url}/ui/ (log in as {name}, password {password}: shown only now; change it with `keel users add {name} --update --data {}`)",
                args.data.display()
            )),
            None => say(&format!("web UI: {url}/ui/")),
        }

        let state_dir = args.data.join("local-agent");
        let mut agent = keel_agent::Agent::new(&state_dir, &args.root);
        agent.recovery_recipient.clone_from(&args.recovery_key);
        let enroll_token = match &server.first_start {
            _ if agent.config().is_ok() => String::new(),
            Some(first) => first.enroll_token.clone(),
            None => server.issue_token(TokenKind::Enroll, "keel up")?,
        };
        let root = args.root.clone();
        let count = args.count;
        let admin_args = ServerArgs {
            server: Some(url.clone()),
            token: Some(admin),
            ca: Some(args.data.join("ca.pem")),
        };
        let every = keel_schedule::parse_duration(&args.every)?;
        let local = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let config = if let Ok(c) = agent.config() {
                c
            } else {
                let read =
                    |p: &str| std::fs::read_to_string(root.join(p)).map(|s| s.trim().to_string());
                let host = read("etc/hostname").context("cannot read /etc/hostname")?;
                let machine_id = read("etc/machine-id").context("cannot read /etc/machine-id")?;
                agent.enroll(&url, &enroll_token, &host, &machine_id, Some(&schedule))?
            };
            say(&format!(
                "this machine is enrolled as host {} (captures {})",
                config.host,
                agent.schedule()
            ));
            let client = Client::new(&admin_args)?;
            let mut n = 0u64;
            loop {
                let started = std::time::Instant::now();
                agent.capture_to_spool()?;
                let report = agent.deliver()?;
                if let Some(why) = &report.stopped {
                    say(&format!("delivery paused: {why}"));
                } else {
                    show_newest(&client, &config.host, report.bytes_sent)?;
                }
                n += 1;
                if count > 0 && n >= count {
                    return Ok(());
                }
                std::thread::sleep(every.saturating_sub(started.elapsed()));
            }
        });
        tokio::select! {
            r = local => {
                r.context("the local agent stopped")??;
                Ok(ExitCode::SUCCESS)
            }
            r = server.wait() => {
                r?;
                Ok(ExitCode::SUCCESS)
            }
            _ = tokio::signal::ctrl_c() => {
                say("stopped");
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Prints the host's newest profile and its changes against the one before.
fn show_newest(client: &Client, host: &str, bytes_sent: u64) -> anyhow::Result<()> {
    let newest = super::client::host_profiles(client, host, 1)?;
    let Some(p) = newest.first() else {
        return Ok(());
    };
    let id = p["id"].as_i64().unwrap_or(0);
    let sent = format!("{bytes_sent} bytes sent");
    if p["previous"].is_null() {
        say(&format!(
            "profile {id} of {host} stored: the first, {} bytes ({sent}); the next ones are \
             diffed against it",
            p["size"]
        ));
        return Ok(());
    }
    let changes = client.get_array(&format!("/api/v1/profiles/{id}/changes"), &[])?;
    let counted: Vec<&serde_json::Value> = changes
        .iter()
        .filter(|c| c["volatility"] != "volatile")
        .collect();
    if counted.is_empty() {
        say(&format!(
            "profile {id} of {host} stored: no configuration changes ({sent})"
        ));
        return Ok(());
    }
    say(&format!(
        "profile {id} of {host} stored: {} change(s) since the one before ({sent}):",
        counted.len()
    ));
    for c in counted.iter().take(20) {
        say(&format!(
            "  {} {}/{} {}{}",
            c["kind"].as_str().unwrap_or("?"),
            c["section"].as_str().unwrap_or("?"),
            c["table"].as_str().unwrap_or("?"),
            c["key"].as_str().unwrap_or("?"),
            c["field"]
                .as_str()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default()
        ));
    }
    if counted.len() > 20 {
        say(&format!(
            "  … and {} more: keel diff {host} --from … --to {id}",
            counted.len() - 20
        ));
    }
    Ok(())
}
