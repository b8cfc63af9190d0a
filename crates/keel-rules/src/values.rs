//! Turning profiles and changes into CEL values, and CEL values back into text and keys.
//!
//! Values borrow their strings from the input (`CelString` over `&str`), so building them
//! costs one allocation per map and list but no string copies. Only the parts of a profile
//! that some rule mentions are built (see [`Needs`](crate::compile::Needs)).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::LazyLock;

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use keel_profile::{Change, ChangeKind, Profile, Section, TableView, Volatility};
use serde_json::Value as Json;

use crate::compile::{Needs, ProfileNeeds, TableNeeds};
use crate::eval::Input;

/// A boxed CEL value that may borrow from the input for `'v`.
pub(crate) type BoxVal<'v> = Box<dyn Val + 'v>;

/// Every `section.table` a profile of this build can hold, so that `added["x.y"]` is an empty
/// list rather than an error when nothing of that table was added.
static TABLE_NAMES: LazyLock<Vec<String>> = LazyLock::new(|| {
    Profile::default()
        .sections()
        .into_iter()
        .flat_map(|s| {
            s.tables
                .into_iter()
                .map(move |t| format!("{}.{}", s.name, t.name))
        })
        .collect()
});

/// The section names a profile has, in order, as `profile.<name>` (with `meta` and
/// `collectors`, which are not tables of a section).
pub(crate) fn section_names() -> &'static [&'static str] {
    &[
        "meta",
        "collectors",
        "hardware",
        "storage",
        "os",
        "packages",
        "users",
        "security",
        "network",
        "services",
        "schedules",
        "kernel",
        "files",
    ]
}

fn section_tables(p: &Profile, name: &str) -> Option<Vec<TableView>> {
    Some(match name {
        "hardware" => p.hardware.tables(),
        "storage" => p.storage.tables(),
        "os" => p.os.tables(),
        "packages" => p.packages.tables(),
        "users" => p.users.tables(),
        "security" => p.security.tables(),
        "network" => p.network.tables(),
        "services" => p.services.tables(),
        "schedules" => p.schedules.tables(),
        "kernel" => p.kernel.tables(),
        "files" => p.files.tables(),
        _ => return None,
    })
}

macro_rules! one_table {
    ($p:ident, $section:ident, $table:ident; $($s:ident: $($t:ident)*;)*) => {
        match ($section, $table) {
            $($( (stringify!($s), stringify!($t)) => Some(TableView::of(&$p.$s.$t)), )*)*
            _ => None,
        }
    };
}

/// One table alone: a rule naming `profile.packages.repositories` should not pay for
/// serializing every package. A table missing here (added to the model later) is still found,
/// through its whole section; a unit test keeps the list complete.
fn table_of(p: &Profile, section: &str, table: &str) -> Option<TableView> {
    one_table!(p, section, table;
        hardware: system cpu memory pci_devices nics firmware;
        storage: disks partitions md_arrays lvm_pvs lvm_vgs lvm_lvs luks filesystems fstab
            crypttab mounts usage swaps;
        os: release host running_kernel kernels boot;
        packages: packages repositories repository_keys alternatives;
        users: users groups authorized_keys;
        security: sshd ssh_host_keys sudoers mac firewall secrets;
        network: interfaces addresses routes dns hosts ifupdown listening;
        services: units default_target init_scripts;
        schedules: cron timers;
        kernel: sysctl sysctl_running modules modprobe modules_load;
        files: files ignored_files data_paths;
    )
}

/// The owned JSON of the profile parts some rule needs; CEL values borrow from it.
#[derive(Default)]
pub(crate) struct ProfileData {
    meta: Option<Json>,
    collectors: Option<TableView>,
    sections: Vec<(&'static str, Vec<TableView>)>,
}

impl ProfileData {
    pub(crate) fn new(p: &Profile, needs: &ProfileNeeds) -> Self {
        let mut data = ProfileData::default();
        let wanted = |name: &str| -> Option<Option<&TableNeeds>> {
            match needs {
                ProfileNeeds::None => None,
                ProfileNeeds::All => Some(None),
                ProfileNeeds::Parts(parts) => parts.get(name).map(Some),
            }
        };
        if wanted("meta").is_some() {
            data.meta = Some(serde_json::to_value(&p.meta).unwrap_or(Json::Null));
        }
        if wanted("collectors").is_some() {
            data.collectors = Some(TableView::of(&p.collectors));
        }
        for &name in &section_names()[2..] {
            let Some(tables_wanted) = wanted(name) else {
                continue;
            };
            let tables = match tables_wanted {
                Some(TableNeeds::Some(set)) => {
                    let mut tables: Vec<TableView> =
                        set.iter().filter_map(|t| table_of(p, name, t)).collect();
                    if tables.len() < set.len() {
                        tables = section_tables(p, name).unwrap_or_default();
                        tables.retain(|t| set.contains(t.name));
                    }
                    tables
                }
                _ => section_tables(p, name).unwrap_or_default(),
            };
            data.sections.push((name, tables));
        }
        data
    }

    /// The profile as a CEL map: `meta`, `collectors` and each section as a map of tables.
    pub(crate) fn to_val(&self) -> BoxVal<'_> {
        let mut map: HashMap<CelMapKey<'_>, BoxVal<'_>> = HashMap::new();
        if let Some(meta) = &self.meta {
            map.insert("meta".into(), json_val(meta));
        }
        if let Some(c) = &self.collectors {
            map.insert("collectors".into(), table_val(c));
        }
        for (name, tables) in &self.sections {
            let section: HashMap<CelMapKey<'_>, BoxVal<'_>> = tables
                .iter()
                .map(|t| (CelMapKey::from(t.name), table_val(t)))
                .collect();
            map.insert((*name).into(), Box::new(CelMap::from(section)));
        }
        Box::new(CelMap::from(map))
    }
}

fn table_val(t: &TableView) -> BoxVal<'_> {
    Box::new(CelList::from(
        t.rows
            .iter()
            .map(|(key, row)| row_val(key, row))
            .collect::<Vec<_>>(),
    ))
}

/// A row as a map with its natural key added as `_key`.
fn row_val<'v>(key: &'v str, row: &'v Json) -> BoxVal<'v> {
    let Json::Object(fields) = row else {
        return json_val(row);
    };
    let mut map: HashMap<CelMapKey<'v>, BoxVal<'v>> = fields
        .iter()
        .map(|(k, v)| (CelMapKey::from(k.as_str()), json_val(v)))
        .collect();
    map.insert("_key".into(), Box::new(CelString::from(key)));
    Box::new(CelMap::from(map))
}

/// Any JSON value as the CEL value of the same shape. Integers become `int` when they fit,
/// so `item.uid == 0` and `item.size_bytes > 1000` compare as written.
pub(crate) fn json_val(v: &Json) -> BoxVal<'_> {
    match v {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Box::new(CelInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Box::new(CelUInt::from(u))
            } else {
                Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(a) => Box::new(CelList::from(a.iter().map(json_val).collect::<Vec<_>>())),
        Json::Object(m) => Box::new(CelMap::from(
            m.iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), json_val(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

fn str_val(s: &str) -> BoxVal<'_> {
    Box::new(CelString::from(s))
}

fn change_val(c: &Change) -> BoxVal<'_> {
    let mut map: HashMap<CelMapKey<'_>, BoxVal<'_>> = HashMap::with_capacity(8);
    map.insert("section".into(), str_val(&c.section));
    map.insert("table".into(), str_val(&c.table));
    map.insert("key".into(), str_val(&c.key));
    map.insert("kind".into(), str_val(c.kind.as_str()));
    map.insert(
        "field".into(),
        match &c.field {
            Some(f) => str_val(f),
            None => Box::new(CelNull),
        },
    );
    map.insert("old".into(), json_val(&c.old));
    map.insert("new".into(), json_val(&c.new));
    map.insert("volatility".into(), str_val(c.volatility.as_str()));
    Box::new(CelMap::from(map))
}

fn list_val(items: Vec<BoxVal<'_>>) -> BoxVal<'_> {
    Box::new(CelList::from(items))
}

/// The variables of one evaluation, built once and shared by every rule.
pub(crate) struct Prepared {
    profile: ProfileData,
    previous: Option<ProfileData>,
}

impl Prepared {
    pub(crate) fn new(input: &Input<'_>, needs: &Needs) -> Self {
        Prepared {
            profile: ProfileData::new(input.profile, &needs.profile),
            previous: input.previous.map(|p| ProfileData::new(p, &needs.previous)),
        }
    }

    /// Binds every variable some rule needs into `ctx`.
    pub(crate) fn bind<'v>(
        &'v self,
        ctx: &mut cel::Context<'_, 'v>,
        input: &Input<'v>,
        needs: &Needs,
    ) {
        if !matches!(needs.profile, ProfileNeeds::None) {
            ctx.add_variable_as_val("profile", self.profile.to_val());
        }
        if !matches!(needs.previous, ProfileNeeds::None) {
            let v: BoxVal<'v> = match &self.previous {
                Some(p) => p.to_val(),
                None => Box::new(CelNull),
            };
            ctx.add_variable_as_val("previous", v);
        }
        let changes = || {
            input
                .changes
                .iter()
                .filter(|c| c.volatility != Volatility::Volatile)
        };
        if needs.changes {
            ctx.add_variable_as_val("changes", list_val(changes().map(change_val).collect()));
        }
        let by_table = |kind: ChangeKind, f: &dyn Fn(&'v Change) -> BoxVal<'v>| {
            let mut lists: HashMap<CelMapKey<'v>, Vec<BoxVal<'v>>> = TABLE_NAMES
                .iter()
                .map(|name| (CelMapKey::from(name.as_str()), Vec::new()))
                .collect();
            for c in changes().filter(|c| c.kind == kind) {
                let name = format!("{}.{}", c.section, c.table);
                let key = TABLE_NAMES
                    .iter()
                    .find(|n| **n == name)
                    .map_or_else(|| CelMapKey::from(name), |n| CelMapKey::from(n.as_str()));
                lists.entry(key).or_default().push(f(c));
            }
            let map: HashMap<CelMapKey<'v>, BoxVal<'v>> =
                lists.into_iter().map(|(k, v)| (k, list_val(v))).collect();
            Box::new(CelMap::from(map)) as BoxVal<'v>
        };
        if needs.added {
            ctx.add_variable_as_val(
                "added",
                by_table(ChangeKind::Added, &|c| row_val(&c.key, &c.new)),
            );
        }
        if needs.removed {
            ctx.add_variable_as_val(
                "removed",
                by_table(ChangeKind::Removed, &|c| row_val(&c.key, &c.old)),
            );
        }
        if needs.changed {
            ctx.add_variable_as_val("changed", by_table(ChangeKind::Changed, &change_val));
        }
        if needs.host {
            let labels: HashMap<CelMapKey<'v>, BoxVal<'v>> = input
                .host
                .labels
                .iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), str_val(v)))
                .collect();
            let mut host: HashMap<CelMapKey<'v>, BoxVal<'v>> = HashMap::new();
            host.insert("name".into(), str_val(&input.host.name));
            host.insert("labels".into(), Box::new(CelMap::from(labels)));
            ctx.add_variable_as_val("host", Box::new(CelMap::from(host)));
        }
    }
}

// ---------------------------------------------------------------- back from CEL

/// A CEL value as JSON, map keys sorted, for messages and keys. Values with no JSON form (type
/// values, optionals) become `"<type>"`.
pub(crate) fn val_json(v: &dyn Val) -> Json {
    if let Some(s) = v.downcast_ref::<CelString>() {
        Json::String(s.inner().to_string())
    } else if let Some(i) = v.downcast_ref::<CelInt>() {
        Json::from(*i.inner())
    } else if let Some(u) = v.downcast_ref::<CelUInt>() {
        Json::from(*u.inner())
    } else if let Some(d) = v.downcast_ref::<CelDouble>() {
        serde_json::Number::from_f64(*d.inner()).map_or(Json::Null, Json::Number)
    } else if let Some(b) = v.downcast_ref::<CelBool>() {
        Json::Bool(*b.inner())
    } else if v.downcast_ref::<CelNull>().is_some() {
        Json::Null
    } else if let Some(l) = v.downcast_ref::<CelList>() {
        Json::Array(l.inner().iter().map(|e| val_json(e.as_ref())).collect())
    } else if let Some(m) = v.downcast_ref::<CelMap>() {
        let sorted: BTreeMap<String, Json> = m
            .inner()
            .iter()
            .map(|(k, v)| (key_text(k), val_json(v.as_ref())))
            .collect();
        Json::Object(sorted.into_iter().collect())
    } else {
        Json::String(format!("<{}>", v.get_type().name()))
    }
}

fn key_text(k: &CelMapKey<'_>) -> String {
    match k {
        CelMapKey::String(s) => s.inner().to_string(),
        CelMapKey::Int(i) => i.inner().to_string(),
        CelMapKey::UInt(u) => u.inner().to_string(),
        CelMapKey::Bool(b) => b.inner().to_string(),
    }
}

/// A CEL value as message text: strings bare, everything else as compact JSON.
pub(crate) fn val_text(v: &dyn Val, out: &mut String) {
    if let Some(s) = v.downcast_ref::<CelString>() {
        out.push_str(s.inner());
    } else {
        let _ = write!(out, "{}", val_json(v));
    }
}

fn map_str<'a>(m: &'a CelMap<'_>, key: &'static str) -> Option<&'a str> {
    m.inner()
        .get(&CelMapKey::from(key))
        .and_then(|v| v.downcast_ref::<CelString>())
        .map(CelString::inner)
}

/// A stable identity for one `for_each` element, so that the same thing yields the same alert
/// fingerprint from one profile to the next:
///
/// - a row (of `profile`, `previous`, `added` or `removed`): its natural key, `_key`;
/// - a change map: `section.table:key`, plus `#field` for a changed field;
/// - a string, number or bool: its text;
/// - anything else: a 64-bit FNV-1a digest of its canonical JSON, as 16 hex digits.
pub(crate) fn item_key(v: &dyn Val) -> String {
    if let Some(m) = v.downcast_ref::<CelMap>() {
        if let Some(k) = map_str(m, "_key") {
            return k.to_string();
        }
        if let (Some(s), Some(t), Some(k)) = (
            map_str(m, "section"),
            map_str(m, "table"),
            map_str(m, "key"),
        ) {
            return match map_str(m, "field") {
                Some(f) => format!("{s}.{t}:{k}#{f}"),
                None => format!("{s}.{t}:{k}"),
            };
        }
    }
    match val_json(v) {
        Json::String(s) => s,
        j @ (Json::Number(_) | Json::Bool(_)) => j.to_string(),
        j => format!("{:016x}", fnv1a(j.to_string().as_bytes())),
    }
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_sorted() {
        let j =
            serde_json::json!({"b": [1, -2, 3.5, "x", null, true], "a": {"z": 1, "y": u64::MAX}});
        assert_eq!(val_json(json_val(&j).as_ref()), j);
    }

    #[test]
    fn item_keys() {
        let row = serde_json::json!({"name": "nano"});
        assert_eq!(item_key(row_val("nano:amd64", &row).as_ref()), "nano:amd64");
        let c = Change {
            section: "security".into(),
            table: "sshd".into(),
            key: "port".into(),
            kind: ChangeKind::Changed,
            field: Some("value".into()),
            old: "22".into(),
            new: "2222".into(),
            volatility: Volatility::Config,
        };
        assert_eq!(
            item_key(change_val(&c).as_ref()),
            "security.sshd:port#value"
        );
        assert_eq!(item_key(json_val(&serde_json::json!("x")).as_ref()), "x");
        assert_eq!(item_key(json_val(&serde_json::json!(7)).as_ref()), "7");
        let a = item_key(json_val(&serde_json::json!({"p": 1, "q": [2]})).as_ref());
        let b = item_key(json_val(&serde_json::json!({"q": [2], "p": 1})).as_ref());
        assert_eq!(a, b, "digest does not depend on map order");
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn every_table_can_be_built_alone() {
        let p = Profile::default();
        for section in p.sections().into_iter().skip(1) {
            for t in section.tables {
                let one = table_of(&p, section.name, t.name);
                assert_eq!(
                    one.map(|v| v.name),
                    Some(t.name),
                    "{}.{} is missing from table_of",
                    section.name,
                    t.name
                );
            }
        }
    }

    #[test]
    fn table_names_cover_sections() {
        assert!(TABLE_NAMES.iter().any(|t| t == "packages.packages"));
        assert!(TABLE_NAMES.iter().any(|t| t == "meta.collectors"));
        for name in &section_names()[2..] {
            assert!(
                section_tables(&Profile::default(), name).is_some(),
                "{name}"
            );
            assert!(TABLE_NAMES
                .iter()
                .any(|t| t.starts_with(&format!("{name}."))));
        }
    }
}
