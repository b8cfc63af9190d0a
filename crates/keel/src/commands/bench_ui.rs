//! `keel bench ui`: the web UI's fleet page on a large fleet. Seeds a fresh SQLite store (a
//! real database file, WAL and `synchronous = FULL` as the server opens it) with N hosts, some
//! with open alerts, then times the server-side work of the fleet page: the store queries and
//! the template, without the network.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct UiArgs {
    /// Hosts to seed.
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    /// Timed renders of each page (after one warm-up render).
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn run(args: &UiArgs) -> anyhow::Result<ExitCode> {
    let dir = tempfile::TempDir::new().context("cannot make a temporary directory")?;
    let store = keel_store::SqliteStore::open(&dir.path().join("keel.db"))?;
    let started = Instant::now();
    store.seed_fleet(args.hosts, keel_server::now_ms())?;
    let seeded = started.elapsed();
    let bench = keel_server::FleetBench::new(Arc::new(store));
    // The first page, and a page in the middle of the fleet (keyset paging).
    let middle = format!("host-{:05}", args.hosts / 2);
    let mut report = Vec::new();
    for (page, after) in [("first", None), ("middle", Some(middle.as_str()))] {
        let html = bench.render(after).map_err(anyhow::Error::msg)?;
        let mut times = Vec::with_capacity(args.runs);
        for _ in 0..args.runs.max(1) {
            let t = Instant::now();
            let html = bench.render(after).map_err(anyhow::Error::msg)?;
            times.push(t.elapsed());
            std::hint::black_box(html);
        }
        let max = times.iter().max().copied().unwrap_or_default();
        report.push((page, median(&mut times), max, html.len()));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let pages: Vec<serde_json::Value> = report
            .iter()
            .map(|(page, med, max, bytes)| {
                serde_json::json!({ "page": page, "median_ms": ms(*med), "max_ms": ms(*max), "html_bytes": bytes })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({ "hosts": args.hosts, "runs": args.runs, "seed_ms": ms(seeded), "pages": pages })
        )?;
    } else {
        writeln!(
            out,
            "fleet page, {} hosts (seeded in {:.0} ms), {} runs each:",
            args.hosts,
            ms(seeded),
            args.runs
        )?;
        for (page, med, max, bytes) in &report {
            writeln!(
                out,
                "  {page:<7} page: median {:.2} ms, max {:.2} ms, {} KiB of HTML",
                ms(*med),
                ms(*max),
                bytes / 1024
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
