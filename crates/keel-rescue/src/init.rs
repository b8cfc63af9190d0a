//! What goes into the rescue environment besides packages: the `/init` script, the modules it
//! loads at boot, the kernel module subtrees kept, and the packages installed.

/// Packages installed on top of debootstrap's minbase: the storage tools recovery calls.
pub const PACKAGES: &[&str] = &[
    // partition tables: sfdisk/fdisk (MBR, GPT), sgdisk (GPT), wipefs/blkid/lsblk/mount
    "fdisk",
    "gdisk",
    "util-linux",
    // md RAID, LVM, LUKS
    "mdadm",
    "lvm2",
    "cryptsetup-bin",
    // filesystems and swap (mkswap is util-linux)
    "e2fsprogs",
    "xfsprogs",
    "dosfstools",
    // boot loaders for BIOS and UEFI (grub-install is in grub2-common), and UEFI boot entries
    "grub2-common",
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    "efibootmgr",
    // data paths come back from their backups (keel recover apply)
    "restic",
    // modules, network, and the small tools busybox brings (vi, udhcpc, …)
    "kmod",
    "iproute2",
    "busybox",
];

/// Modules `/init` loads before `keel rescue` starts. Hardware drivers are loaded from the
/// devices' modalias as well; these are the ones that have no device to ask for them (md, dm,
/// filesystems) or that storage found late would need (SCSI disks behind a controller).
pub const BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "nvme",
    "ahci",
    "sd_mod",
    "sr_mod",
    "usb_storage",
    "uas",
    "md_mod",
    "raid1",
    "dm_mod",
    "dm_crypt",
    "ext4",
    "xfs",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_utf8",
    "isofs",
    "efivarfs",
    "af_packet",
];

/// Subtrees of `/lib/modules/RELEASE/kernel/` kept in the image (with everything they depend
/// on): storage controllers, md/dm, the filesystems recovery makes or reads, crypto, network
/// cards, USB storage and keyboards. Sound, graphics, wireless, media and the like go.
pub const KEEP_MODULES: &[&str] = &[
    "arch/x86/crypto/",
    "crypto/",
    "lib/",
    "block/",
    "drivers/ata/",
    "drivers/block/",
    "drivers/cdrom/",
    "drivers/md/",
    "drivers/mmc/",
    "drivers/nvme/",
    "drivers/scsi/",
    "drivers/message/fusion/",
    "drivers/virtio/",
    "drivers/hv/",
    "drivers/xen/",
    "drivers/usb/common/",
    "drivers/usb/core/",
    "drivers/usb/host/",
    "drivers/usb/storage/",
    "drivers/hid/usbhid/",
    "drivers/hid/hid-generic.ko",
    "drivers/net/ethernet/",
    "drivers/net/usb/",
    "drivers/net/bonding/",
    "drivers/net/hyperv/",
    "drivers/net/vmxnet3/",
    "drivers/net/virtio_net.ko",
    "drivers/net/xen-netfront.ko",
    "drivers/net/net_failover.ko",
    "fs/ext4/",
    "fs/jbd2/",
    "fs/mbcache.ko",
    "fs/xfs/",
    "fs/btrfs/",
    "fs/fat/",
    "fs/nls/",
    "fs/isofs/",
    "fs/udf/",
    "fs/efivarfs/",
    "fs/squashfs/",
    "fs/overlayfs/",
    "net/packet/",
    "net/8021q/",
];

/// Where keel is installed inside the environment.
pub const KEEL_PATH: &str = "/usr/local/bin/keel";

/// The environment's description of itself, written at build time; `keel rescue` reads it
/// for its banner and to know it runs inside a rescue environment.
pub const MARKER_PATH: &str = "/etc/keel-rescue.json";

/// The `/init` script: mount the kernel filesystems, load modules, hand over to keel.
pub fn init_script() -> String {
    let modules = BOOT_MODULES.join(" ");
    format!(
        r#"#!/bin/sh
# Keel rescue environment: mounts the kernel's filesystems, loads the storage, filesystem and
# network modules (there is no udev here), then hands PID 1 over to `keel rescue`.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=linux LANG=C.UTF-8
# No udev: libdevmapper (LVM, cryptsetup) creates its device nodes itself.
export DM_DISABLE_UDEV=1

mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/lock /run/lvm /run/cryptsetup /run/mdadm
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
hostname keel-rescue
ip link set lo up 2>/dev/null

modprobe -q -b -a {modules} 2>/dev/null
# Drivers for the hardware present, by modalias; twice, because the first round makes new
# devices appear (disks behind a controller, USB devices behind a host controller).
for round in 1 2; do
    cat /sys/bus/*/devices/*/modalias 2>/dev/null | sort -u | xargs -r modprobe -q -b -a 2>/dev/null
done
[ -d /sys/firmware/efi/efivars ] && mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null

exec {KEEL_PATH} rescue
echo "keel-rescue: cannot start {KEEL_PATH}; starting a shell" >&2
exec /bin/sh
"#
    )
}
