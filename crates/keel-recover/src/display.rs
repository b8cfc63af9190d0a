//! The plan for people: the disk map with reasons, partitions and volumes old size → new size,
//! then the numbered steps and the notes.

use std::fmt;

use crate::plan::{Plan, VolumeKind};
use crate::size::human;

/// Writes rows as columns separated by two spaces; the last column is not padded.
fn table(f: &mut fmt::Formatter<'_>, rows: &[Vec<String>]) -> fmt::Result {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::from(" ");
        for (c, cell) in r.iter().enumerate() {
            line.push(' ');
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = widths[c] - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad + 1));
            }
        }
        writeln!(f, "{}", line.trim_end())?;
    }
    Ok(())
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.source.hostname.is_empty() {
            "the profiled system"
        } else {
            self.source.hostname.as_str()
        };
        write!(f, "Recovery plan for {host}")?;
        if let Some(h) = &self.source.profile_hash {
            write!(f, " (profile {})", h.get(..12).unwrap_or(h))?;
        }
        writeln!(f, ", plan format {}", self.format)?;

        writeln!(f, "\nDisk map")?;
        let mut rows: Vec<Vec<String>> = Vec::new();
        for m in &self.disk_map {
            let s = &m.source;
            let to = match &m.target {
                Some(t) => {
                    let d = self.inventory.iter().find(|d| &d.path == t);
                    match d {
                        Some(d) => format!("→ {} ({}, {})", t, human(d.size_bytes), d.kind),
                        None => format!("→ {t}"),
                    }
                }
                None => "  (not rebuilt)".into(),
            };
            rows.push(vec![
                s.name.clone(),
                format!("{} {}", human(s.size_bytes), s.kind),
                to,
                m.reason.clone(),
            ]);
        }
        for u in &self.unused_targets {
            let size = self
                .inventory
                .iter()
                .find(|d| d.path == u.path)
                .map(|d| format!("{}, {}", human(d.size_bytes), d.kind))
                .unwrap_or_default();
            rows.push(vec![
                "-".into(),
                String::new(),
                format!("  {} ({size})", u.path),
                u.reason.clone(),
            ]);
        }
        table(f, &rows)?;

        if !self.partitions.is_empty() {
            writeln!(f, "\nPartitions")?;
            let mut rows = vec![vec![
                "SOURCE".into(),
                "NEW DEVICE".into(),
                "HOLDS".into(),
                "OLD SIZE".into(),
                String::new(),
                "NEW SIZE".into(),
                "WHY".into(),
            ]];
            for p in &self.partitions {
                rows.push(vec![
                    p.source.clone(),
                    p.device.to_string(),
                    p.content.clone(),
                    human(p.old_bytes),
                    "→".into(),
                    human(p.new_bytes),
                    p.reason.clone(),
                ]);
            }
            table(f, &rows)?;
        }

        if !self.volumes.is_empty() {
            let raid = self.volumes.iter().any(|v| v.kind == VolumeKind::Raid);
            let lvm = self.volumes.iter().any(|v| v.kind != VolumeKind::Raid);
            let title = match (raid, lvm) {
                (true, false) => "RAID",
                (false, true) => "LVM",
                _ => "RAID and LVM",
            };
            writeln!(f, "\n{title}")?;
            let mut rows = vec![vec![
                "NAME".into(),
                "KIND".into(),
                "OLD SIZE".into(),
                String::new(),
                "NEW SIZE".into(),
                "WHY".into(),
            ]];
            for v in &self.volumes {
                let kind = match v.kind {
                    VolumeKind::Raid => "RAID array",
                    VolumeKind::VolumeGroup => "volume group",
                    VolumeKind::LogicalVolume => "logical volume",
                };
                rows.push(vec![
                    v.name.clone(),
                    kind.into(),
                    human(v.old_bytes),
                    "→".into(),
                    human(v.new_bytes),
                    v.reason.clone(),
                ]);
            }
            table(f, &rows)?;
        }

        writeln!(f, "\nSteps")?;
        let width = self.steps.len().to_string().len();
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "  {:>width$}. {}", i + 1, s.describe())?;
        }
        if !self.notes.is_empty() {
            writeln!(f, "\nNotes")?;
            for n in &self.notes {
                writeln!(f, "  - {n}")?;
            }
        }
        Ok(())
    }
}
