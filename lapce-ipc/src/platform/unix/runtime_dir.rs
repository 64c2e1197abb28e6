//! Where sockets live: the private per-user runtime directory, and the checks an explicit
//! socket directory must pass.

use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode};

use super::boot_tag::{boot_tag, is_boot_tag};
use super::credentials::current_uid;
use crate::error::{IpcError, Result};

/// The private per-user runtime directory: `$XDG_RUNTIME_DIR/lapce-ipc/` (a per-user tmpfs the
/// login manager empties at logout and every boot), else `/tmp/lapce-ipc-<uid>-<boot>/`, where
/// `<boot>` tells this boot from earlier ones ([`boot_tag`]; left out where it cannot be read)
/// and `$LAPCE_IPC_TMPDIR` replaces `/tmp` when set (like tmux's `TMUX_TMPDIR`). Created with
/// mode 0700 if missing; refused when it is a symlink, not a directory, owned by someone else
/// or accessible by group/others.
pub(crate) fn runtime_dir() -> Result<PathBuf> {
    let uid = current_uid();
    let dir = match xdg_runtime_dir() {
        Some(base) => base.join("lapce-ipc"),
        None => fallback_runtime_dir(&fallback_base(), uid, boot_tag()),
    };
    checked_private_dir(dir, uid)
}

/// `$XDG_RUNTIME_DIR`, when set.
pub(crate) fn xdg_runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Where the runtime directory is made without `$XDG_RUNTIME_DIR`: `$LAPCE_IPC_TMPDIR`, else
/// `/tmp` (never `$TMPDIR`: a listener and its clients must agree on it, and `TMPDIR` differs
/// between environments of one user more often than not).
pub(crate) fn fallback_base() -> PathBuf {
    std::env::var_os("LAPCE_IPC_TMPDIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

/// The runtime directory under `base` of user `uid` in the boot tagged `boot`.
pub(crate) fn fallback_runtime_dir(base: &Path, uid: u32, boot: Option<&str>) -> PathBuf {
    match boot {
        Some(boot) => base.join(format!("lapce-ipc-{uid}-{boot}")),
        None => base.join(format!("lapce-ipc-{uid}")),
    }
}

/// The runtime directories under `base` of user `uid` from other boots, and the untagged one:
/// nothing in them can belong to a live listener of this boot, except one that put its sockets
/// in the untagged directory because it could not read the boot tag, which is why their sockets
/// are probed before removal like any other.
pub(crate) fn other_boot_runtime_dirs(base: &Path, uid: u32) -> Vec<PathBuf> {
    let own = fallback_runtime_dir(base, uid, boot_tag());
    let Ok(entries) = std::fs::read_dir(base) else { return Vec::new() };
    let untagged = format!("lapce-ipc-{uid}");
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name == untagged
                || name
                    .strip_prefix(&untagged)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(is_boot_tag)
        })
        .map(|e| e.path())
        .filter(|p| *p != own)
        .collect()
}

/// Creates `dir` with mode 0700 if it is missing, then checks it is a real directory that `uid`
/// owns and nobody else may enter.
fn checked_private_dir(dir: PathBuf, uid: u32) -> Result<PathBuf> {
    match rustix::fs::mkdir(&dir, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => {
            return Err(IpcError::Bind { path: dir, source: e.into() });
        }
    }
    check_private_dir(&dir, uid)?;
    Ok(dir)
}

/// Checks that `dir` is a real directory that `uid` owns and nobody else may enter.
pub(crate) fn check_private_dir(dir: &Path, uid: u32) -> Result<()> {
    let st =
        rustix::fs::lstat(dir).map_err(|e| IpcError::Bind { path: dir.to_path_buf(), source: e.into() })?;
    let insecure = |reason: String| Err(IpcError::InsecurePath { path: dir.to_path_buf(), reason });
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return insecure("not a directory (symlinks are refused)".into());
    }
    if st.st_uid != uid {
        return insecure(format!("owned by uid {}, not by us (uid {uid})", st.st_uid));
    }
    if st.st_mode & 0o077 != 0 {
        return insecure(format!(
            "mode {:o} gives access to group or others (want 0700)",
            st.st_mode & 0o777
        ));
    }
    Ok(())
}

/// Checks an explicit socket directory (`StreamConfig::socket_dir`) before a socket is bound or
/// connected in it; never creates it. It must be an absolute path to an existing directory, not
/// a symlink, owned by us (a client also trusts a directory owned by one of `allowed_uids`),
/// never writable by group or others, and 0700-tight like the runtime directory when
/// `allowed_uids` is empty. Every refusal is an [`IpcError::InsecurePath`] naming the directory
/// and what is wrong.
///
/// Why these rules: nobody else may create, replace or rename entries in the directory (so the
/// socket a listener binds, and later chmods, is its own, and the one a client connects to is
/// the listener's), and other users may only traverse it when an allow-list says some of them
/// are welcome.
pub(crate) fn check_socket_dir(dir: &Path, allowed_uids: &[u32], client: bool) -> Result<()> {
    let insecure = |reason: String| Err(IpcError::InsecurePath { path: dir.to_path_buf(), reason });
    if !dir.is_absolute() {
        return insecure("socket_dir must be an absolute path".into());
    }
    let st = match rustix::fs::lstat(dir) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => {
            return insecure("does not exist (an explicit socket_dir is never created)".into())
        }
        Err(e) => return insecure(format!("cannot be inspected: {}", io::Error::from(e))),
    };
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {}
        FileType::Symlink => return insecure("is a symlink (refused: use the real directory)".into()),
        _ => return insecure("is not a directory".into()),
    }
    let own = current_uid();
    let owner = st.st_uid;
    if owner != own && !(client && allowed_uids.contains(&owner)) {
        let whom = if client {
            format!("by us (uid {own}) or an allowed uid")
        } else {
            format!("by us (uid {own})")
        };
        return insecure(format!("owned by uid {owner}, not {whom}"));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return insecure(format!("mode {mode:o} is writable by group or others (refused)"));
    }
    if allowed_uids.is_empty() && mode & 0o077 != 0 {
        return insecure(format!(
            "mode {mode:o} gives access to group or others; want 0700 while allowed_uids is empty \
             (a mode such as 0711 lets other users reach the socket only with a non-empty allow-list)"
        ));
    }
    Ok(())
}
