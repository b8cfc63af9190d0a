//! Storage: the persisted configuration (`/etc/fstab`, `/etc/crypttab`) and the devices that
//! hold the captured root (disks, partition tables, RAID, LVM, LUKS headers, filesystems,
//! mounts, usage, swap).
//!
//! Every external output goes through a pure parser in a submodule, tested on captured outputs
//! in `tests/fixtures/storage/`.

mod blkid;
mod devices;
mod exec;
mod luks;
mod lvm;
mod mdstat;
mod mountinfo;
mod sfdisk;
mod swaps;
mod sysfs;
mod tabs;
mod usage;

use crate::{CollectError, Ctx, Piece};

/// `storage.config`: fstab and crypttab of the root. A missing file is an empty table: a system
/// without encrypted volumes has no crypttab.
pub(crate) fn collect_config(ctx: &Ctx) -> Result<Piece, CollectError> {
    let mut warnings = Vec::new();
    let (fstab, problems) =
        tabs::parse_fstab(&ctx.root.read_opt("/etc/fstab")?.unwrap_or_default());
    warnings.extend(problems);
    let (crypttab, problems) =
        tabs::parse_crypttab(&ctx.root.read_opt("/etc/crypttab")?.unwrap_or_default());
    warnings.extend(problems);
    Ok(Piece::new(move |file: &mut keel_profile::ProfileFile| {
        file.profile.storage.fstab = fstab;
        file.profile.storage.crypttab = crypttab;
    })
    .warn(warnings))
}

/// `storage.devices`: see [`devices`].
pub(crate) fn collect_devices(ctx: &Ctx) -> Result<Piece, CollectError> {
    devices::collect(ctx)
}
