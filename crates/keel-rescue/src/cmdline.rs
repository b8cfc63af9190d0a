//! Options given to the rescue environment on the kernel command line (`keel.kit=LABEL`,
//! `keel.wait=SECONDS`, `keel.shell=0`, `keel.poweroff=0`), so a boot loader or PXE entry
//! can steer an unattended run without a keyboard.

/// Options read from `/proc/cmdline`; `None` where the command line says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootOptions {
    /// `keel.kit=LABEL`: the kit's filesystem label.
    pub kit_label: Option<String>,
    /// `keel.wait=SECONDS`: how long to wait for the kit's disk to appear.
    pub wait_secs: Option<u64>,
    /// `keel.shell=0|1`: whether to start a shell when no kit is found.
    pub shell: Option<bool>,
    /// `keel.poweroff=0|1`: whether to power off at the end.
    pub poweroff: Option<bool>,
}

fn flag(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "off" => Some(false),
        _ => None,
    }
}

impl BootOptions {
    /// Parses a kernel command line; unknown and malformed `keel.` options are ignored (a
    /// typo on a boot prompt must not keep the environment from starting).
    pub fn parse(cmdline: &str) -> BootOptions {
        let mut o = BootOptions::default();
        for word in cmdline.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let value = value.trim_matches('"');
            match key {
                "keel.kit" if !value.is_empty() => o.kit_label = Some(value.to_string()),
                "keel.wait" => o.wait_secs = value.parse().ok().or(o.wait_secs),
                "keel.shell" => o.shell = flag(value).or(o.shell),
                "keel.poweroff" => o.poweroff = flag(value).or(o.poweroff),
                _ => {}
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keel_options_and_ignores_the_rest() {
        let o = BootOptions::parse(
            "console=ttyS0 quiet keel.kit=RESCUE1 keel.wait=30 keel.shell=no keel.poweroff=1 keel.x=1\n",
        );
        assert_eq!(
            o,
            BootOptions {
                kit_label: Some("RESCUE1".into()),
                wait_secs: Some(30),
                shell: Some(false),
                poweroff: Some(true),
            }
        );
        assert_eq!(
            BootOptions::parse("keel.wait=soon keel.shell=maybe keel.kit="),
            BootOptions::default()
        );
    }
}
