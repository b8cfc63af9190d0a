//! `keel server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory: the database, the CA and the TLS certificate.
    #[arg(long, env = "KEEL_DATA", default_value = "./keel-data")]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "KEEL_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Extra DNS name or IP address for the TLS certificate (made on first start).
    #[arg(long = "name")]
    names: Vec<String>,
    /// Settings file: alert receivers, rule files, the missing-profile watch (default:
    /// `keel-server.toml` in the data directory, when it exists).
    #[arg(long, env = "KEEL_CONFIG")]
    config: Option<PathBuf>,
}

#[allow(clippy::print_stderr)]
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let mut config = keel_server::Config::new(&args.data, args.listen);
        config.names.clone_from(&args.names);
        let settings_file = args
            .config
            .clone()
            .or_else(|| Some(args.data.join("keel-server.toml")).filter(|p| p.exists()));
        if let Some(path) = &settings_file {
            config.settings = keel_server::Settings::load(path)?;
            eprintln!(
                "settings from {}: {} receiver(s), {} rule file(s), watch every {}",
                path.display(),
                config.settings.receivers.len(),
                config.settings.rules_files.len(),
                keel_schedule::format_duration(config.settings.watch.interval)
            );
        }
        let server = keel_server::Server::start(&config).await?;
        eprintln!(
            "keel server listening on https://{} (data in {})",
            server.addr,
            args.data.display()
        );
        eprintln!("CA fingerprint (SHA-256): {}", server.ca_fingerprint);
        eprintln!(
            "web UI: https://{}/ui/ (accounts: `keel users add NAME --role admin --data {}`)",
            server.addr,
            args.data.display()
        );
        if let Some(first) = &server.first_start {
            eprintln!();
            eprintln!("First start: these tokens are shown once and stored only as hashes.");
            eprintln!("  admin token:      {}", first.admin_token);
            eprintln!("  enrollment token: {}", first.enroll_token);
            eprintln!();
            eprintln!("Enroll a machine with:");
            eprintln!(
                "  keel agent enroll --server https://{} --token {}",
                server.addr, first.enroll_token
            );
        }
        let addr = server.addr;
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("signal handlers can be installed");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        tokio::select! {
            r = server.wait() => r.with_context(|| format!("server on {addr} stopped"))?,
            () = shutdown => eprintln!("shutting down"),
        }
        Ok(ExitCode::SUCCESS)
    })
}
