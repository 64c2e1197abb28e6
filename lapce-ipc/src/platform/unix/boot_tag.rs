//! A short tag of the current boot: it tells this boot's runtime directory from those of
//! earlier boots.

#[cfg(not(any(target_os = "linux", target_os = "android")))]
use super::os;

/// Whether `s` has the shape of a [`boot_tag`]: 8 lower-case hex digits.
pub(super) fn is_boot_tag(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A short tag of the current boot (8 hex digits), read once: on Linux the start of the kernel's
/// random `boot_id`, on macOS and the BSDs the boot time (`kern.boottime`) in seconds. `None`
/// where it cannot be read.
pub(crate) fn boot_tag() -> Option<&'static str> {
    static TAG: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TAG.get_or_init(read_boot_tag).as_deref()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_boot_tag() -> Option<String> {
    // A UUID such as "0f1e2d3c-...", new at every boot.
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let tag = id.trim().get(..8)?.to_ascii_lowercase();
    is_boot_tag(&tag).then_some(tag)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn read_boot_tag() -> Option<String> {
    let secs = os::boot_time_secs()?;
    Some(format!("{:08x}", secs as u32))
}
