//! `keel rules`: try alert rules offline, check them, print the built-in pack.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use keel_profile::{diff, DiffOptions, Profile};
use keel_rules::{
    builtin_rules, rules_from_json, rules_from_toml, Firing, HostInfo, Input, Rule, RuleError,
    RuleSet, Severity, BUILTIN_TOML,
};

use super::client::{encode, Client, Format as ApiFormat, ServerArgs};
use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum Rules {
    /// Evaluate rules on a profile, after a previous one (exit 0: nothing fired, 1: something
    /// fired, 2: a rule is broken or another error).
    Test(TestArgs),
    /// Check that rules compile, and evaluate without error on a sample profile (exit 0: all
    /// good, 2: a rule is broken).
    Check(CheckArgs),
    /// Print the built-in rules as TOML, to copy and edit.
    Builtin,
    /// List the rules in force on a server: built-in, from its rule files, saved.
    List(ListArgs),
    /// Save rules on a server. Each is checked against a stored profile first; a broken rule
    /// is refused with the reason and nothing of it is saved.
    Save(SaveArgs),
    /// Delete a rule saved on a server (a built-in or file rule it replaced applies again).
    Delete(DeleteArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: ApiFormat,
    #[command(flatten, next_help_heading = "Server")]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    /// Rules file: TOML with [[rule]] tables, or JSON when it ends in `.json`.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Check against this host's newest profile (default: any host's).
    #[arg(long)]
    host: Option<String>,
    #[command(flatten, next_help_heading = "Server")]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The rule's name.
    name: String,
    #[command(flatten, next_help_heading = "Server")]
    server: ServerArgs,
}

/// Output format of `keel rules test`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// A JSON array of firings.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Source {
    /// A rules file: TOML with [[rule]] tables, or JSON (an array of rules) when it ends in
    /// `.json`. May be repeated.
    #[arg(long = "rules", value_name = "FILE")]
    rules: Vec<PathBuf>,
    /// Add the built-in rules.
    #[arg(long)]
    builtin: bool,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    #[command(flatten)]
    source: Source,
    /// The profile that arrives.
    #[arg(long, value_name = "NEW")]
    profile: PathBuf,
    /// The host's profile before it; without it the profile is the host's first.
    #[arg(long, value_name = "OLD")]
    previous: Option<PathBuf>,
    /// The host's name as the rules see it (default: the profile's hostname).
    #[arg(long)]
    host: Option<String>,
    /// A host label, `key=value`. May be repeated.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    source: Source,
    /// A sample profile to evaluate each rule against, as the server does when a rule is
    /// saved. Without it, rules are only parsed.
    #[arg(long, value_name = "SAMPLE")]
    profile: Option<PathBuf>,
    /// The profile before the sample, so that rules see real changes too.
    #[arg(long, value_name = "OLD", requires = "profile")]
    previous: Option<PathBuf>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

pub fn run(cmd: &Rules) -> anyhow::Result<ExitCode> {
    match cmd {
        Rules::Test(a) => test(a),
        Rules::Check(a) => check(a),
        Rules::Builtin => {
            write_stdout(BUILTIN_TOML)?;
            Ok(ExitCode::SUCCESS)
        }
        Rules::List(a) => list_remote(a),
        Rules::Save(a) => save_remote(a),
        Rules::Delete(a) => {
            let client = Client::new(&a.server)?;
            client
                .send(
                    "DELETE",
                    &format!("/api/v1/rules/{}", encode(&a.name)),
                    &[],
                    None,
                )
                .map_err(|e| {
                    if e.status() == Some(404) {
                        anyhow::anyhow!(
                            "no saved rule {}\nhint: built-in and file rules cannot be deleted \
                             through the API; `keel rules list` shows where each rule comes from",
                            a.name
                        )
                    } else {
                        e.into()
                    }
                })?;
            write_stdout(&format!("deleted rule {}\n", a.name))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list_remote(a: &ListArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&a.server)?;
    let rules = client.get_array("/api/v1/rules", &[])?;
    let text = match a.format {
        ApiFormat::Json => {
            let mut s = serde_json::to_string_pretty(&rules)?;
            s.push('\n');
            s
        }
        ApiFormat::Text => {
            let rows: Vec<[String; 4]> = rules
                .iter()
                .map(|r| {
                    let rule = &r["rule"];
                    [
                        rule["name"].as_str().unwrap_or("?").to_string(),
                        rule["severity"].as_str().unwrap_or("?").to_string(),
                        r["origin"].as_str().unwrap_or("?").to_string(),
                        output::clip(
                            &match rule["for_each"].as_str() {
                                Some(each) => match rule["when"].as_str() {
                                    None | Some("true") => format!("for each {each}"),
                                    Some(when) => format!("for each {each} when {when}"),
                                },
                                None => rule["when"].as_str().unwrap_or("true").to_string(),
                            },
                            80,
                        ),
                    ]
                })
                .collect();
            super::hosts::table(&["NAME", "SEVERITY", "ORIGIN", "EXPRESSION"], &rows)
        }
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stderr)]
fn save_remote(a: &SaveArgs) -> anyhow::Result<ExitCode> {
    let rules = read_rules(&a.file)?;
    if rules.is_empty() {
        bail!("{} holds no rules", a.file.display());
    }
    let client = Client::new(&a.server)?;
    let mut query = Vec::new();
    if let Some(h) = &a.host {
        query.push(("host", h.clone()));
    }
    let mut refused = 0;
    for rule in &rules {
        let body = serde_json::to_value(rule)?;
        match client.send(
            "PUT",
            &format!("/api/v1/rules/{}", encode(&rule.name)),
            &query,
            Some(&body),
        ) {
            Ok(answer) => {
                let on = answer["checked_against"].as_str().map_or_else(
                    || " (no stored profile to check against yet)".into(),
                    |h| format!(" (checked against {h}'s newest profile)"),
                );
                write_stdout(&format!("saved rule {}{on}\n", rule.name))?;
            }
            Err(e) if e.status() == Some(400) => {
                refused += 1;
                eprintln!("error: rule {} refused: {}", rule.name, e.message());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(if refused > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn load_rules(source: &Source) -> anyhow::Result<Vec<Rule>> {
    if source.rules.is_empty() && !source.builtin {
        bail!("no rules given\nhint: pass --rules FILE, --builtin, or both");
    }
    let mut rules = if source.builtin {
        builtin_rules()
    } else {
        Vec::new()
    };
    for path in &source.rules {
        rules.extend(read_rules(path)?);
    }
    Ok(rules)
}

fn read_rules(path: &Path) -> anyhow::Result<Vec<Rule>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let origin = path.display().to_string();
    let rules = if path.extension().is_some_and(|e| e == "json") {
        rules_from_json(&text, &origin)?
    } else {
        rules_from_toml(&text, &origin)?
    };
    Ok(rules)
}

/// Prints each broken rule as an `error:` line with its hint.
fn report(errors: &[RuleError]) {
    for e in errors {
        output::error(&anyhow::Error::new(e.clone()));
    }
}

fn test(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let rules = load_rules(&args.source)?;
    let new = output::read_profile(&args.profile)?.profile;
    let old = match &args.previous {
        Some(p) => Some(output::read_profile(p)?.profile),
        None => None,
    };
    let (set, mut errors) = RuleSet::compile_each(rules);
    let changes = old
        .as_ref()
        .map_or_else(Vec::new, |o| diff(o, &new, DiffOptions::default()));
    let host = HostInfo {
        name: args
            .host
            .clone()
            .unwrap_or_else(|| new.meta.hostname.clone()),
        labels: args.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
    };
    let eval = set.evaluate(&Input {
        profile: &new,
        previous: old.as_ref(),
        changes: &changes,
        host: &host,
    });
    errors.extend(eval.errors.into_iter().map(|(_, e)| e));

    let text = match args.format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&eval.firings)?;
            s.push('\n');
            s
        }
        Format::Text => render(&eval.firings, output::color()),
    };
    write_stdout(&text)?;
    report(&errors);
    Ok(if !errors.is_empty() {
        ExitCode::from(2)
    } else if eval.firings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let rules = load_rules(&args.source)?;
    let total = rules.len();
    let (set, mut errors) = RuleSet::compile_each(rules);
    if let Some(path) = &args.profile {
        let sample = output::read_profile(path)?.profile;
        let old: Option<Profile> = match &args.previous {
            Some(p) => Some(output::read_profile(p)?.profile),
            None => None,
        };
        let changes = old
            .as_ref()
            .map_or_else(Vec::new, |o| diff(o, &sample, DiffOptions::default()));
        let host = HostInfo {
            name: sample.meta.hostname.clone(),
            labels: BTreeMap::new(),
        };
        let input = Input {
            profile: &sample,
            previous: old.as_ref(),
            changes: &changes,
            host: &host,
        };
        for rule in set.rules() {
            if let Err(e) = RuleSet::check_against(rule, &input) {
                errors.push(e);
            }
        }
    }
    report(&errors);
    if args.profile.is_none() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "note: rules were only parsed; pass --profile SAMPLE to also evaluate them, which \
                 is what finds misspelt fields and non-bool conditions"
            );
        }
    }
    let how = if args.profile.is_some() {
        "compiled and evaluated on the sample"
    } else {
        "compiled"
    };
    let broken = errors
        .iter()
        .filter_map(RuleError::rule)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    write_stdout(&format!(
        "{} of {total} rules {how} without error\n",
        total - broken
    ))?;
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn render(firings: &[Firing], color: bool) -> String {
    let mut o = String::new();
    if firings.is_empty() {
        o.push_str("no rule fired\n");
        return o;
    }
    let width = firings.iter().map(|f| f.rule.len()).max().unwrap_or(0);
    for f in firings {
        let sev = format!("{:<8}", f.severity.as_str());
        let sev = if color {
            let code = match f.severity {
                Severity::Critical => "1;31",
                Severity::Warning => "33",
                Severity::Info => "36",
            };
            format!("\x1b[{code}m{sev}\x1b[0m")
        } else {
            sev
        };
        let _ = writeln!(o, "{sev} {:<width$}  {}", f.rule, f.message);
    }
    let rules = firings
        .iter()
        .map(|f| f.rule.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let _ = writeln!(
        o,
        "\n{} from {}",
        plural(firings.len(), "firing"),
        plural(rules, "rule")
    );
    o
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .context("cannot write to standard output")?;
    out.flush().context("cannot write to standard output")
}
