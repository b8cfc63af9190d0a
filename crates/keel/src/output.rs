//! Terminal output shared by the commands: errors with hints, atomic file writes.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Prints an error chain to stderr as `error: …`, with any `hint:` lines kept apart.
#[allow(clippy::print_stderr)]
pub fn error(e: &anyhow::Error) {
    let mut text = String::new();
    for (i, cause) in e.chain().enumerate() {
        let s = cause.to_string();
        if i > 0 {
            // Libraries repeat their cause in their message; print each fact once.
            if text.contains(&s) {
                continue;
            }
            text.push_str(": ");
        }
        text.push_str(&s);
    }
    let (main, hints): (Vec<&str>, Vec<&str>) = text
        .lines()
        .partition(|l| !l.trim_start().starts_with("hint:"));
    eprintln!("error: {}", main.join("\n  "));
    for h in hints {
        eprintln!("{}", h.trim_start());
    }
}

/// Writes `data` to `path` atomically: a temporary file in the same directory, synced, then
/// renamed over the target, so a crash or a full disk never leaves a partial profile behind.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Reads and decodes a profile file, naming the file in any error.
pub fn read_profile(path: &Path) -> anyhow::Result<keel_profile::ProfileFile> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    keel_profile::ProfileFile::decode(&data)
        .with_context(|| format!("{} is not a readable Keel profile", path.display()))
}

/// Renders a JSON value compactly for people: strings bare when unambiguous.
pub fn value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s)
            if !s.is_empty() && !s.contains(char::is_whitespace) && !s.contains('"') =>
        {
            s.clone()
        }
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Shortens `s` to at most `max` characters.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Whether to colour standard output.
pub fn color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_606_521_000), "2026-11-25T11:35:21Z");
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
