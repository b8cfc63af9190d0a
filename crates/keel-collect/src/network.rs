//! Network: persisted configuration (resolver, hosts, ifupdown) and live state (interfaces,
//! addresses, routes, listening sockets and the units that own them).

use std::collections::{BTreeMap, HashMap};

use keel_profile::{Address, Dns, HostsEntry, IfupdownIface, Interface, Listener, Route};
use serde_json::Value;

use crate::{CollectError, Ctx, Piece, Root};

pub(crate) fn collect_config(ctx: &Ctx) -> Result<Piece, CollectError> {
    let root = &ctx.root;
    let resolv_conf_link = std::fs::read_link(root.path("/etc/resolv.conf"))
        .ok()
        .map(|t| t.to_string_lossy().into_owned());
    // A link into /run has no content on an offline root; the link itself is the config.
    let resolv = root
        .read_opt("/etc/resolv.conf")
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut dns = parse_resolv_conf(&resolv);
    dns.resolv_conf_link = resolv_conf_link;
    let hosts = root
        .read_opt("/etc/hosts")?
        .map(|t| parse_hosts(&t))
        .unwrap_or_default();

    let mut ifupdown = Vec::new();
    read_interfaces(root, "/etc/network/interfaces", &mut ifupdown, 0)?;
    Ok(Piece::new(move |file| {
        file.profile.network.dns = vec![dns];
        file.profile.network.hosts = hosts;
        file.profile.network.ifupdown = ifupdown;
    }))
}

fn read_interfaces(
    root: &Root,
    path: &str,
    out: &mut Vec<IfupdownIface>,
    depth: u32,
) -> Result<(), CollectError> {
    if depth > 4 {
        return Ok(());
    }
    let Some(text) = root.read_opt(path)? else {
        return Ok(());
    };
    let (mut ifaces, sources) = parse_interfaces(&text, path);
    out.append(&mut ifaces);
    for src in sources {
        // `source` takes a glob; `source-directory` a directory. Both mostly name
        // `/etc/network/interfaces.d/*`.
        let (dir, pattern_all) = match src.strip_suffix("/*") {
            Some(d) => (d.to_string(), true),
            None if root.path(&src).is_dir() => (src.clone(), true),
            None => (src.clone(), false),
        };
        if pattern_all {
            for name in root.list_dir(&dir)? {
                if name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    read_interfaces(root, &format!("{dir}/{name}"), out, depth + 1)?;
                }
            }
        } else {
            read_interfaces(root, &dir, out, depth + 1)?;
        }
    }
    Ok(())
}

/// Parses ifupdown's interfaces file: stanzas, plus the files it sources.
pub fn parse_interfaces(text: &str, file: &str) -> (Vec<IfupdownIface>, Vec<String>) {
    let mut out: Vec<IfupdownIface> = Vec::new();
    let mut auto = Vec::new();
    let mut hotplug = Vec::new();
    let mut sources = Vec::new();
    let mut current: Option<usize> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        match first {
            "auto" | "allow-auto" => {
                auto.extend(words.map(String::from));
                current = None;
            }
            "allow-hotplug" => {
                hotplug.extend(words.map(String::from));
                current = None;
            }
            "source" | "source-directory" => {
                if let Some(p) = words.next() {
                    let p = if p.starts_with('/') {
                        p.to_string()
                    } else {
                        format!("/etc/network/{p}")
                    };
                    sources.push(p);
                }
                current = None;
            }
            "iface" => {
                let name = words.next().unwrap_or("").to_string();
                let family = words.next().unwrap_or("inet").to_string();
                let method = words.next().unwrap_or("").to_string();
                out.push(IfupdownIface {
                    name,
                    family,
                    method,
                    file: file.into(),
                    ..IfupdownIface::default()
                });
                current = Some(out.len() - 1);
            }
            "mapping" => current = None,
            opt => {
                if let Some(i) = current {
                    let value = words.collect::<Vec<_>>().join(" ");
                    let entry = out[i].options.entry(opt.to_string()).or_default();
                    if !entry.is_empty() {
                        entry.push_str("; ");
                    }
                    entry.push_str(&value);
                }
            }
        }
    }
    for i in &mut out {
        i.auto = auto.contains(&i.name);
        i.hotplug = hotplug.contains(&i.name);
    }
    (out, sources)
}

/// Parses `/etc/resolv.conf`.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut d = Dns::default();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => d.nameservers.extend(w.next().map(String::from)),
            Some("search" | "domain") => d.search = w.map(String::from).collect(),
            _ => {}
        }
    }
    d
}

/// Parses `/etc/hosts`; an address listed twice gets one row with all its names.
pub fn parse_hosts(text: &str) -> Vec<HostsEntry> {
    let mut by_addr: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut w = line.split_whitespace();
        let Some(addr) = w.next() else { continue };
        by_addr
            .entry(addr.to_string())
            .or_default()
            .extend(w.map(String::from));
    }
    by_addr
        .into_iter()
        .map(|(address, names)| HostsEntry { address, names })
        .collect()
}

pub(crate) fn collect_live(ctx: &Ctx) -> Result<Piece, CollectError> {
    let root = &ctx.root;
    let mut interfaces = Vec::new();
    for name in root.list_dir("/sys/class/net")? {
        let base = format!("/sys/class/net/{name}");
        let read = |f: &str| {
            root.read_opt(&format!("{base}/{f}"))
                .ok()
                .flatten()
                .map(|s| s.trim().to_string())
        };
        let kind = if root.path(&format!("{base}/device")).exists() {
            "physical"
        } else if root.path(&format!("{base}/bridge")).exists() {
            "bridge"
        } else if root.path(&format!("{base}/bonding")).exists() {
            "bond"
        } else if name == "lo" {
            "loopback"
        } else {
            "virtual"
        };
        interfaces.push(Interface {
            name: name.clone(),
            mac: read("address").filter(|m| m != "00:00:00:00:00:00"),
            mtu: read("mtu").and_then(|m| m.parse().ok()).unwrap_or(0),
            kind: kind.into(),
            operstate: read("operstate").unwrap_or_default(),
        });
    }
    let mut warnings = Vec::new();
    let addresses = match ctx.run("ip", &["-j", "addr", "show"]) {
        Ok(out) => parse_ip_addr(&out)?,
        Err(e) => {
            warnings.push(format!("addresses unknown: {e}"));
            Vec::new()
        }
    };
    let routes = match ctx.run("ip", &["-j", "route", "show", "table", "all"]) {
        Ok(out) => parse_ip_route(&out)?,
        Err(e) => {
            warnings.push(format!("routes unknown: {e}"));
            Vec::new()
        }
    };
    let listening = listening(root)?;
    Ok(Piece::new(move |file| {
        file.profile.network.interfaces = interfaces;
        file.profile.network.addresses = addresses;
        file.profile.network.routes = routes;
        file.profile.network.listening = listening;
    })
    .warn(warnings))
}

/// Parses `ip -j addr show`.
pub fn parse_ip_addr(json: &str) -> Result<Vec<Address>, CollectError> {
    let v: Value =
        serde_json::from_str(json).map_err(|e| CollectError::parse("ip -j addr", e.to_string()))?;
    let mut out = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        let ifname = link["ifname"].as_str().unwrap_or("").to_string();
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let (Some(local), Some(prefix)) = (a["local"].as_str(), a["prefixlen"].as_u64()) else {
                continue;
            };
            out.push(Address {
                interface: ifname.clone(),
                family: a["family"].as_str().unwrap_or("").into(),
                address: local.into(),
                prefix: prefix as u8,
                scope: a["scope"].as_str().unwrap_or("").into(),
            });
        }
    }
    Ok(out)
}

/// Parses `ip -j route show table all`, skipping the kernel's local and broadcast routes.
pub fn parse_ip_route(json: &str) -> Result<Vec<Route>, CollectError> {
    let v: Value = serde_json::from_str(json)
        .map_err(|e| CollectError::parse("ip -j route", e.to_string()))?;
    let mut out = Vec::new();
    for r in v.as_array().into_iter().flatten() {
        let kind = r["type"].as_str().unwrap_or("unicast");
        if kind == "local" || kind == "broadcast" || kind == "multicast" {
            continue;
        }
        let table = r["table"].as_str().unwrap_or("main").to_string();
        if table == "local" {
            continue;
        }
        out.push(Route {
            table,
            destination: r["dst"].as_str().unwrap_or("default").into(),
            gateway: r["gateway"].as_str().map(String::from),
            interface: r["dev"].as_str().map(String::from),
            protocol: r["protocol"].as_str().map(String::from),
            metric: r["metric"].as_u64(),
        });
    }
    Ok(out)
}

fn listening(root: &Root) -> Result<Vec<Listener>, CollectError> {
    let mut socks: Vec<(String, String, u16, u64)> = Vec::new();
    for (file, proto, v6) in [
        ("tcp", "tcp", false),
        ("tcp6", "tcp", true),
        ("udp", "udp", false),
        ("udp6", "udp", true),
    ] {
        if let Some(t) = root.read_opt(&format!("/proc/net/{file}"))? {
            for (addr, port, inode) in parse_proc_net(&t, v6, proto == "tcp") {
                socks.push((proto.to_string(), addr, port, inode));
            }
        }
    }
    if socks.is_empty() {
        return Ok(Vec::new());
    }
    let owners = socket_owners(root);
    let mut out: BTreeMap<String, Listener> = BTreeMap::new();
    for (protocol, address, port, inode) in socks {
        let (process, unit) = owners.get(&inode).cloned().unwrap_or((None, None));
        let l = Listener {
            protocol,
            address,
            port,
            process,
            unit,
        };
        out.entry(keel_profile::Record::key(&l)).or_insert(l);
    }
    Ok(out.into_values().collect())
}

/// Socket inode → (process name, systemd unit), from `/proc/*/fd`.
fn socket_owners(root: &Root) -> HashMap<u64, (Option<String>, Option<String>)> {
    let mut map = HashMap::new();
    let Ok(pids) = root.list_dir("/proc") else {
        return map;
    };
    for pid in pids
        .into_iter()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        let Ok(fds) = std::fs::read_dir(root.path(&format!("/proc/{pid}/fd"))) else {
            continue;
        };
        let mut inodes = Vec::new();
        for fd in fds.flatten() {
            if let Ok(t) = std::fs::read_link(fd.path()) {
                let t = t.to_string_lossy();
                if let Some(n) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    if let Ok(n) = n.parse::<u64>() {
                        inodes.push(n);
                    }
                }
            }
        }
        if inodes.is_empty() {
            continue;
        }
        let comm = root
            .read_opt(&format!("/proc/{pid}/comm"))
            .ok()
            .flatten()
            .map(|s| s.trim().to_string());
        let unit = root
            .read_opt(&format!("/proc/{pid}/cgroup"))
            .ok()
            .flatten()
            .and_then(|c| unit_from_cgroup(&c));
        for i in inodes {
            map.entry(i).or_insert((comm.clone(), unit.clone()));
        }
    }
    map
}

/// The systemd unit a process belongs to, from its cgroup path.
pub fn unit_from_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let path = l.rsplit(':').next()?;
        path.split('/')
            .rev()
            .find(|c| c.ends_with(".service") || c.ends_with(".scope") || c.ends_with(".socket"))
            .map(String::from)
    })
}

/// Parses `/proc/net/{tcp,udp}[6]` into listening `(address, port, inode)`: TCP sockets in
/// LISTEN, UDP sockets that are bound and unconnected.
pub fn parse_proc_net(text: &str, v6: bool, tcp: bool) -> Vec<(String, u16, u64)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let state = f[3];
        if (tcp && state != "0A") || (!tcp && state != "07") {
            continue;
        }
        let Some((addr_hex, port_hex)) = f[1].split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port_hex, 16) else {
            continue;
        };
        let Some(addr) = decode_addr(addr_hex, v6) else {
            continue;
        };
        let inode = f[9].parse().unwrap_or(0);
        out.push((addr, port, inode));
    }
    out
}

fn decode_addr(hex: &str, v6: bool) -> Option<String> {
    if v6 {
        if hex.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for word in 0..4 {
            let w = u32::from_str_radix(&hex[word * 8..word * 8 + 8], 16).ok()?;
            bytes[word * 4..word * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        Some(std::net::Ipv6Addr::from(bytes).to_string())
    } else {
        let w = u32::from_str_radix(hex, 16).ok()?;
        Some(std::net::Ipv4Addr::from(w.to_le_bytes()).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 999 1\n";
        let l = parse_proc_net(t, false, true);
        assert_eq!(l, vec![("0.0.0.0".to_string(), 22, 12345)]);
        let t6 = "h\n   0: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 777 2\n";
        assert_eq!(
            parse_proc_net(t6, true, false),
            vec![("::1".to_string(), 53, 777)]
        );
    }

    #[test]
    fn interfaces_file() {
        let (i, src) = parse_interfaces("source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n\nallow-hotplug ens3\niface ens3 inet static\n    address 192.0.2.10/24\n    gateway 192.0.2.1\n    dns-nameservers 192.0.2.53\n", "/etc/network/interfaces");
        assert_eq!(src, vec!["/etc/network/interfaces.d/*"]);
        assert_eq!(i.len(), 2);
        assert!(i[0].auto);
        assert!(i[1].hotplug && !i[1].auto);
        assert_eq!(i[1].method, "static");
        assert_eq!(i[1].options["address"], "192.0.2.10/24");
    }

    #[test]
    fn ip_json() {
        let a = parse_ip_addr(r#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]}]"#).unwrap();
        assert_eq!(a[0].address, "127.0.0.1");
        let r = parse_ip_route(r#"[{"dst":"default","gateway":"192.0.2.1","dev":"ens3","protocol":"static"},{"type":"local","dst":"127.0.0.1","table":"local"}]"#).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].table, "main");
    }

    #[test]
    fn cgroup_unit() {
        assert_eq!(
            unit_from_cgroup("0::/system.slice/ssh.service\n").as_deref(),
            Some("ssh.service")
        );
        assert_eq!(unit_from_cgroup("0::/\n"), None);
    }

    #[test]
    fn resolv_and_hosts() {
        let d = parse_resolv_conf("nameserver 192.0.2.53\nsearch example.org\n");
        assert_eq!(d.nameservers, vec!["192.0.2.53"]);
        let h =
            parse_hosts("127.0.0.1 localhost\n::1 localhost ip6-localhost # x\n127.0.0.1 extra\n");
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].names, vec!["localhost", "extra"]);
    }
}
