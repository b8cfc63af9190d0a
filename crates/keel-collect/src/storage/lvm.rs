//! LVM from `pvs`/`vgs`/`lvs --reportformat json --units b --nosuffix -o …`.

use keel_profile::{LvmLv, LvmPv, LvmVg};
use serde_json::Value;

use crate::CollectError;

/// The `-o` field lists the collector asks for; the parsers read these names.
pub(crate) const PVS_FIELDS: &str = "pv_name,pv_uuid,vg_name,pv_size";
pub(crate) const VGS_FIELDS: &str = "vg_name,vg_uuid,vg_extent_size,vg_size,vg_free";
pub(crate) const LVS_FIELDS: &str =
    "vg_name,lv_name,lv_uuid,lv_size,segtype,lv_attr,lv_kernel_major,lv_kernel_minor";

/// The rows of a report: `{"report": [{"pv": [ {...}, ... ]}]}`.
fn rows(text: &str, kind: &str) -> Result<Vec<serde_json::Map<String, Value>>, CollectError> {
    let what = || format!("{kind}s --reportformat json output");
    let doc: Value =
        serde_json::from_str(text).map_err(|e| CollectError::parse(what(), e.to_string()))?;
    let reports = doc
        .get("report")
        .and_then(Value::as_array)
        .ok_or_else(|| CollectError::parse(what(), "no \"report\" array"))?;
    let mut out = Vec::new();
    for r in reports {
        for row in r.get(kind).and_then(Value::as_array).into_iter().flatten() {
            if let Some(obj) = row.as_object() {
                out.push(obj.clone());
            }
        }
    }
    Ok(out)
}

fn text(row: &serde_json::Map<String, Value>, key: &str) -> String {
    match row.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// A byte count: `--units b --nosuffix` gives plain digits; tolerate a `B` suffix in case an
/// lvm.conf setting wins over `--nosuffix`.
fn bytes(row: &serde_json::Map<String, Value>, key: &str) -> Result<u64, CollectError> {
    let raw = text(row, key);
    let v = raw.trim().trim_end_matches(['B', 'b']);
    if v.is_empty() {
        return Ok(0);
    }
    v.parse().map_err(|_| {
        CollectError::parse(
            format!("LVM report field {key}"),
            format!("{raw:?} is not a byte count (were --units b --nosuffix ignored?)"),
        )
    })
}

/// Parses `pvs` output.
pub(crate) fn parse_pvs(text_: &str) -> Result<Vec<LvmPv>, CollectError> {
    rows(text_, "pv")?
        .iter()
        .map(|r| {
            Ok(LvmPv {
                uuid: text(r, "pv_uuid"),
                device: text(r, "pv_name"),
                vg: text(r, "vg_name"),
                size_bytes: bytes(r, "pv_size")?,
            })
        })
        .collect()
}

/// Parses `vgs` output.
pub(crate) fn parse_vgs(text_: &str) -> Result<Vec<LvmVg>, CollectError> {
    rows(text_, "vg")?
        .iter()
        .map(|r| {
            Ok(LvmVg {
                name: text(r, "vg_name"),
                uuid: text(r, "vg_uuid"),
                extent_size: bytes(r, "vg_extent_size")?,
                size_bytes: bytes(r, "vg_size")?,
                free_bytes: bytes(r, "vg_free")?,
            })
        })
        .collect()
}

/// An LV and, when it is active, its kernel device number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lv {
    pub lv: LvmLv,
    pub dev: Option<(u32, u32)>,
}

/// Parses `lvs` output.
pub(crate) fn parse_lvs(text_: &str) -> Result<Vec<Lv>, CollectError> {
    rows(text_, "lv")?
        .iter()
        .map(|r| {
            let major = text(r, "lv_kernel_major").parse::<u32>().ok();
            let minor = text(r, "lv_kernel_minor").parse::<u32>().ok();
            Ok(Lv {
                lv: LvmLv {
                    vg: text(r, "vg_name"),
                    name: text(r, "lv_name"),
                    uuid: text(r, "lv_uuid"),
                    size_bytes: bytes(r, "lv_size")?,
                    segtype: text(r, "segtype"),
                    attributes: text(r, "lv_attr"),
                },
                dev: major.zip(minor),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = format!(
            "{}/tests/fixtures/storage/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn pvs() {
        let pvs = parse_pvs(&fixture("pvs.json")).unwrap();
        assert_eq!(
            pvs,
            [LvmPv {
                uuid: "Kq3x1Y-0aBc-DeFg-HiJk-LmNo-PqRs-TuVwXy".into(),
                device: "/dev/loop1".into(),
                vg: "vgkeel".into(),
                size_bytes: 62_914_560,
            }]
        );
    }

    #[test]
    fn vgs() {
        let vgs = parse_vgs(&fixture("vgs.json")).unwrap();
        assert_eq!(vgs.len(), 1);
        assert_eq!(vgs[0].name, "vgkeel");
        assert_eq!(vgs[0].uuid, "a4YCmv-35LQ-f0cA-WJGs-tMMj-9BoN-63GVBG");
        assert_eq!(vgs[0].extent_size, 4 * 1024 * 1024);
        assert_eq!(vgs[0].size_bytes, 62_914_560);
        assert_eq!(vgs[0].free_bytes, 0);
    }

    #[test]
    fn lvs() {
        let lvs = parse_lvs(&fixture("lvs.json")).unwrap();
        assert_eq!(lvs.len(), 2);
        assert_eq!(lvs[0].lv.vg, "vgkeel");
        assert_eq!(lvs[0].lv.name, "root");
        assert_eq!(lvs[0].lv.size_bytes, 32 * 1024 * 1024);
        assert_eq!(lvs[0].lv.segtype, "linear");
        assert_eq!(lvs[0].lv.attributes, "-wi-XX----");
        assert_eq!(lvs[0].dev, None, "not active: major/minor are -1");
        assert_eq!(lvs[1].lv.name, "swap");
        let active = r#"{"report":[{"lv":[{"vg_name":"v","lv_name":"l","lv_size":"4194304B",
            "lv_kernel_major":"253","lv_kernel_minor":"1"}]}]}"#;
        let lvs = parse_lvs(active).unwrap();
        assert_eq!(lvs[0].dev, Some((253, 1)));
        assert_eq!(lvs[0].lv.size_bytes, 4_194_304, "a B suffix is tolerated");
    }

    #[test]
    fn errors_name_the_report() {
        let e = parse_vgs("{}").unwrap_err().to_string();
        assert!(e.contains("vgs") && e.contains("report"), "{e}");
        let e = parse_pvs(r#"{"report":[{"pv":[{"pv_size":"10.00g"}]}]}"#).unwrap_err();
        assert!(e.to_string().contains("--units b"), "{e}");
    }
}
