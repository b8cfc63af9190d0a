//! keel-rescue for real: the rescue environment built from Debian packages and booted under
//! QEMU (TCG) with blank disks attached, where a recovery kit builds RAID 1, LVM, LUKS2 and
//! ext4/XFS/FAT/swap with given UUIDs and installs GRUB for BIOS and UEFI — the layouts the
//! host's kernel cannot make. Also `keel rescue` run by hand on a kit in a directory.

mod boot;
mod by_hand;
mod layouts;
mod qemu;
mod recover;
mod support;
mod system;
#[path = "../../../keel-system/tests/it/support.rs"]
#[allow(dead_code)]
mod system_support;
