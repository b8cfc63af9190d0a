//! LVM from one `lvm fullreport --reportformat json --units b --nosuffix`: physical volumes,
//! volume groups, logical volumes and their segments in a single device scan (each LVM command
//! costs tens of milliseconds, and `lvs -o segtype` would print an LV once per segment).

use std::collections::BTreeMap;

use keel_profile::{LvmLv, LvmPv, LvmVg};
use serde_json::{Map, Value};

use crate::CollectError;

/// Arguments of the `lvm` command whose output [`parse_report`] reads.
pub(crate) const FULLREPORT_ARGS: &[&str] = &[
    "fullreport",
    "--reportformat",
    "json",
    "--units",
    "b",
    "--nosuffix",
    "--configreport",
    "pv",
    "-o",
    "pv_name,pv_uuid,vg_name,pv_size",
    "--configreport",
    "vg",
    "-o",
    "vg_name,vg_uuid,vg_extent_size,vg_size,vg_free",
    "--configreport",
    "lv",
    "-o",
    "vg_name,lv_name,lv_uuid,lv_size,lv_attr",
    "--configreport",
    "seg",
    "-o",
    "lv_uuid,segtype",
    // Physical segments are not recorded; one small column keeps the default ones out.
    "--configreport",
    "pvseg",
    "-o",
    "pv_uuid",
];

/// What an LVM report describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Report {
    pub pvs: Vec<LvmPv>,
    pub vgs: Vec<LvmVg>,
    pub lvs: Vec<LvmLv>,
}

type Row = Map<String, Value>;

/// The rows of each kind (`pv`, `vg`, `lv`, `seg`) over all of a report's entries:
/// `{"report": [{"vg": [...], "pv": [...], ...}, ...]}` (one entry per VG in a fullreport).
fn rows(text: &str, what: &str) -> Result<BTreeMap<String, Vec<Row>>, CollectError> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| CollectError::parse(what, e.to_string()))?;
    let reports = doc
        .get("report")
        .and_then(Value::as_array)
        .ok_or_else(|| CollectError::parse(what, "no \"report\" array"))?;
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for r in reports.iter().filter_map(Value::as_object) {
        for (kind, list) in r {
            let list = list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_object);
            out.entry(kind.clone()).or_default().extend(list.cloned());
        }
    }
    Ok(out)
}

fn text(row: &Row, key: &str) -> String {
    match row.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// A byte count: `--units b --nosuffix` gives plain digits; tolerate a `B` suffix in case an
/// lvm.conf setting wins over `--nosuffix`.
fn bytes(row: &Row, key: &str) -> Result<u64, CollectError> {
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

/// Parses an LVM JSON report: `lvm fullreport` as the collector runs it, or the output of
/// `pvs`, `vgs` or `lvs` with the same columns.
pub(crate) fn parse_report(text_: &str) -> Result<Report, CollectError> {
    let rows = rows(text_, "LVM report (--reportformat json)")?;
    let of = |kind: &str| rows.get(kind).map_or(&[][..], Vec::as_slice);
    // An LV's segment types, in order and without repeats (`linear`, or `raid1,linear` while
    // a conversion is under way).
    let mut segtypes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for seg in of("seg") {
        let types = segtypes.entry(text(seg, "lv_uuid")).or_default();
        let t = text(seg, "segtype");
        if !types.contains(&t) {
            types.push(t);
        }
    }
    let pvs = of("pv")
        .iter()
        .map(|r| {
            Ok(LvmPv {
                uuid: text(r, "pv_uuid"),
                device: text(r, "pv_name"),
                vg: text(r, "vg_name"),
                size_bytes: bytes(r, "pv_size")?,
            })
        })
        .collect::<Result<_, CollectError>>()?;
    let vgs = of("vg")
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
        .collect::<Result<_, CollectError>>()?;
    let mut lvs: Vec<LvmLv> = Vec::new();
    for r in of("lv") {
        let uuid = text(r, "lv_uuid");
        // `lvs -o segtype` prints an LV once per segment.
        if lvs.iter().any(|l| l.uuid == uuid && !uuid.is_empty()) {
            continue;
        }
        let segtype = match segtypes.get(&uuid) {
            Some(types) => types.join(","),
            None => text(r, "segtype"),
        };
        lvs.push(LvmLv {
            vg: text(r, "vg_name"),
            name: text(r, "lv_name"),
            size_bytes: bytes(r, "lv_size")?,
            segtype,
            attributes: text(r, "lv_attr"),
            uuid,
        });
    }
    Ok(Report { pvs, vgs, lvs })
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
    fn fullreport() {
        let r = parse_report(&fixture("lvm-fullreport.json")).unwrap();
        let pvs: Vec<(&str, &str)> = r
            .pvs
            .iter()
            .map(|p| (p.device.as_str(), p.vg.as_str()))
            .collect();
        assert_eq!(
            pvs,
            [
                ("/dev/loop0p3", "vgimg"),
                ("/dev/loop1", "vgother"),
                ("/dev/loop2", "")
            ]
        );
        assert_eq!(r.pvs[0].uuid, "HoisJx-XBq7-3Dky-kkAI-i9Uu-EQMo-tJK1WI");
        assert_eq!(r.pvs[0].size_bytes, 46_137_344);
        assert_eq!(
            r.vgs[0],
            LvmVg {
                name: "vgimg".into(),
                uuid: "i55MFc-9ilz-hBt3-zFjR-Wua4-rcNu-y7YyzA".into(),
                extent_size: 4 * 1024 * 1024,
                size_bytes: 46_137_344,
                free_bytes: 25_165_824,
            }
        );
        assert_eq!(r.vgs.len(), 2);
        assert_eq!(
            r.lvs[0],
            LvmLv {
                vg: "vgimg".into(),
                name: "data".into(),
                uuid: "7pb0x1-fdRR-ewKg-K31B-fNYD-a7rF-8Uj8s2".into(),
                size_bytes: 16 * 1024 * 1024,
                segtype: "linear".into(),
                attributes: "-wi-XX----".into(),
            },
            "two linear segments make one linear LV"
        );
        assert_eq!(r.lvs.len(), 2);
        assert_eq!(r.lvs[1].name, "log");
    }

    #[test]
    fn single_reports() {
        let pvs = parse_report(&fixture("pvs.json")).unwrap().pvs;
        assert_eq!(
            pvs,
            [LvmPv {
                uuid: "Kq3x1Y-0aBc-DeFg-HiJk-LmNo-PqRs-TuVwXy".into(),
                device: "/dev/loop1".into(),
                vg: "vgkeel".into(),
                size_bytes: 62_914_560,
            }]
        );
        let vgs = parse_report(&fixture("vgs.json")).unwrap().vgs;
        assert_eq!(vgs[0].name, "vgkeel");
        assert_eq!(vgs[0].free_bytes, 0);
        let lvs = parse_report(&fixture("lvs.json")).unwrap().lvs;
        assert_eq!(lvs.len(), 2);
        assert_eq!(
            (lvs[0].name.as_str(), lvs[0].segtype.as_str()),
            ("root", "linear")
        );
        assert_eq!(lvs[0].size_bytes, 32 * 1024 * 1024);
        assert_eq!(lvs[1].name, "swap");
    }

    #[test]
    fn segment_rows_and_suffixes() {
        let per_segment = r#"{"report":[{"lv":[
            {"vg_name":"v","lv_name":"l","lv_uuid":"U","lv_size":"4194304B","segtype":"raid1"},
            {"vg_name":"v","lv_name":"l","lv_uuid":"U","lv_size":"4194304B","segtype":"raid1"}]}]}"#;
        let lvs = parse_report(per_segment).unwrap().lvs;
        assert_eq!(lvs.len(), 1, "one row per LV, not per segment");
        assert_eq!(lvs[0].size_bytes, 4_194_304, "a B suffix is tolerated");
        assert_eq!(lvs[0].segtype, "raid1");
    }

    #[test]
    fn errors_name_the_report() {
        let e = parse_report("{}").unwrap_err().to_string();
        assert!(e.contains("LVM report") && e.contains("report"), "{e}");
        let e = parse_report(r#"{"report":[{"pv":[{"pv_size":"10.00g"}]}]}"#).unwrap_err();
        assert!(e.to_string().contains("--units b"), "{e}");
    }
}
