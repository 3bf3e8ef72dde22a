//! The mounts below a directory, detached: what a worker finds left of its predecessor under its
//! mounts directory at start (FUSE mounts and tmpfs whose servers are gone), and what a test's
//! temporary home holds once its worker stopped (a sleeping tenant's pinned network namespace).

use std::path::{Path, PathBuf};

use tracing::{info, warn};

/// Detaches every mount at or below `dir`, the deepest first; each one logged.
pub fn detach_below(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut below: Vec<PathBuf> = mount_points(&mountinfo)
        .filter(|point| point.starts_with(dir))
        .collect();
    below.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    for mount in below {
        match nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => info!(mount = %mount.display(), "detached a stale mount"),
            Err(e) => warn!(mount = %mount.display(), error = %e, "could not detach a stale mount"),
        }
    }
}

/// The mount point of every line of `mountinfo` (the text of `/proc/self/mountinfo`).
fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
}

/// A field of `mountinfo` with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_with_their_escapes_undone() {
        assert_eq!(unescape("/tmp/a\\040b/net"), "/tmp/a b/net");
        assert_eq!(unescape("/tmp/plain"), "/tmp/plain");
        assert_eq!(unescape("/tmp/x\\09"), "/tmp/x\\09");
        let mountinfo =
            "36 35 98:0 / /tmp/a\\040b rw - ext4 /dev/x rw\n37 35 0:4 / /proc rw - proc proc rw\n";
        let points: Vec<PathBuf> = mount_points(mountinfo).collect();
        assert_eq!(points, [PathBuf::from("/tmp/a b"), PathBuf::from("/proc")]);
    }
}
