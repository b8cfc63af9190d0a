//! Hardware of the running machine: DMI identity, CPU, memory, PCI devices, NICs, firmware.

use keel_profile::{Cpu, Firmware, Memory, Nic, PciDevice, SystemInfo};

use crate::{CollectError, Ctx, Piece, Root};

pub(crate) fn collect(ctx: &Ctx) -> Result<Piece, CollectError> {
    let root = &ctx.root;
    let dmi = |f: &str| {
        root.read_opt(&format!("/sys/class/dmi/id/{f}"))
            .ok()
            .flatten()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let cpuinfo = root.read_opt("/proc/cpuinfo")?.unwrap_or_default();
    let mut cpu = parse_cpuinfo(&cpuinfo);
    let virtualization = detect_virt(
        &cpuinfo,
        dmi("sys_vendor").as_deref(),
        dmi("product_name").as_deref(),
    );
    let system = SystemInfo {
        vendor: dmi("sys_vendor"),
        product: dmi("product_name"),
        serial: dmi("product_serial"),
        uuid: dmi("product_uuid"),
        board_vendor: dmi("board_vendor"),
        board_name: dmi("board_name"),
        chassis_type: dmi("chassis_type"),
        bios_vendor: dmi("bios_vendor"),
        bios_version: dmi("bios_version"),
        bios_date: dmi("bios_date"),
        virtualization: Some(virtualization),
    };
    // Topology from sysfs is more reliable than counting cpuinfo blocks.
    let cpus = root
        .list_dir("/sys/devices/system/cpu")?
        .into_iter()
        .filter(|n| {
            n.strip_prefix("cpu")
                .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
        })
        .count() as u32;
    if cpus > 0 {
        cpu.threads = cpus;
    }

    let meminfo = root.read_opt("/proc/meminfo")?.unwrap_or_default();
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let memory = Memory {
        total_bytes: total_kib * 1024,
    };

    let mut pci = Vec::new();
    for addr in root.list_dir("/sys/bus/pci/devices")? {
        let base = format!("/sys/bus/pci/devices/{addr}");
        let read = |f: &str| {
            root.read_opt(&format!("{base}/{f}"))
                .ok()
                .flatten()
                .map(|s| s.trim().trim_start_matches("0x").to_string())
        };
        pci.push(PciDevice {
            address: addr.clone(),
            vendor_id: read("vendor").unwrap_or_default(),
            device_id: read("device").unwrap_or_default(),
            class: read("class").unwrap_or_default(),
            subsystem_vendor_id: read("subsystem_vendor"),
            subsystem_device_id: read("subsystem_device"),
            driver: link_name(root, &format!("{base}/driver")),
        });
    }

    let mut nics = Vec::new();
    for name in root.list_dir("/sys/class/net")? {
        let base = format!("/sys/class/net/{name}");
        if !root.path(&format!("{base}/device")).exists() {
            continue;
        }
        let read = |f: &str| {
            root.read_opt(&format!("{base}/{f}"))
                .ok()
                .flatten()
                .map(|s| s.trim().to_string())
        };
        let Some(mac) = read("address") else { continue };
        nics.push(Nic {
            mac,
            name: name.clone(),
            driver: link_name(root, &format!("{base}/device/driver")),
            bus_info: link_name(root, &format!("{base}/device")),
            speed_mbps: read("speed")
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|s| *s > 0)
                .map(|s| s as u64),
            operstate: read("operstate"),
        });
    }

    let uefi = root.path("/sys/firmware/efi").is_dir();
    let secure_boot = if uefi {
        root.list_dir("/sys/firmware/efi/efivars")?
            .into_iter()
            .find(|n| n.starts_with("SecureBoot-"))
            .and_then(|n| std::fs::read(root.path(&format!("/sys/firmware/efi/efivars/{n}"))).ok())
            .and_then(|b| b.last().copied())
            .map(|b| b == 1)
    } else {
        None
    };
    let firmware = Firmware {
        mode: if uefi { "uefi" } else { "bios" }.into(),
        secure_boot,
        tpm: root.path("/sys/class/tpm/tpm0").exists(),
    };

    Ok(Piece::new(move |file| {
        let h = &mut file.profile.hardware;
        h.system = vec![system];
        h.cpu = vec![cpu];
        h.memory = vec![memory];
        h.pci_devices = pci;
        h.nics = nics;
        h.firmware = vec![firmware];
    }))
}

fn link_name(root: &Root, abs: &str) -> Option<String> {
    std::fs::read_link(root.path(abs))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// Summarises `/proc/cpuinfo`.
pub fn parse_cpuinfo(text: &str) -> Cpu {
    let mut cpu = Cpu::default();
    let mut physical = std::collections::BTreeSet::new();
    let mut cores = std::collections::BTreeSet::new();
    let mut phys_id = String::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "processor" => cpu.threads += 1,
            "vendor_id" if cpu.vendor.is_empty() => cpu.vendor = v.into(),
            "model name" if cpu.model.is_empty() => cpu.model = v.into(),
            "microcode" if cpu.microcode.is_none() => cpu.microcode = Some(v.into()),
            "physical id" => {
                phys_id = v.to_string();
                physical.insert(v.to_string());
            }
            "core id" => {
                cores.insert(format!("{phys_id}/{v}"));
            }
            _ => {}
        }
    }
    cpu.sockets = (physical.len() as u32).max(1);
    cpu.cores = if cores.is_empty() {
        cpu.threads
    } else {
        cores.len() as u32
    };
    cpu
}

/// Names the hypervisor, or `none` on bare metal.
pub fn detect_virt(cpuinfo: &str, vendor: Option<&str>, product: Option<&str>) -> String {
    let hypervisor = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
    let v = vendor.unwrap_or("").to_ascii_lowercase();
    let p = product.unwrap_or("").to_ascii_lowercase();
    let named = if v.contains("qemu") || p.contains("kvm") || p.contains("qemu") {
        Some("kvm")
    } else if v.contains("vmware") {
        Some("vmware")
    } else if v.contains("microsoft") {
        Some("microsoft")
    } else if v.contains("xen") {
        Some("xen")
    } else if v.contains("amazon") {
        Some("amazon")
    } else if v.contains("google") {
        Some("google")
    } else if v.contains("innotek") || p.contains("virtualbox") {
        Some("oracle")
    } else {
        None
    };
    match (named, hypervisor) {
        (Some(n), _) => n.into(),
        (None, true) => "unknown".into(),
        (None, false) => "none".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo() {
        let c = parse_cpuinfo("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\nmicrocode\t: 0x1\nphysical id\t: 0\ncore id\t: 0\nflags\t: fpu hypervisor\n\nprocessor\t: 1\nphysical id\t: 0\ncore id\t: 1\n");
        assert_eq!((c.threads, c.cores, c.sockets), (2, 2, 1));
        assert_eq!(c.model, "Xeon");
        assert_eq!(
            detect_virt("flags\t: fpu hypervisor", Some("QEMU"), Some("Standard PC")),
            "kvm"
        );
        assert_eq!(detect_virt("flags\t: fpu", None, None), "none");
    }
}
