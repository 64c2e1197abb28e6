//! Who a process runs as: the user SID of its token, to refuse peers of another user and to give
//! each user their own pipe names.

use std::io;
use std::os::windows::io::{AsRawHandle, OwnedHandle};
use std::ptr::null_mut;
use std::sync::OnceLock;

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::Security::{GetLengthSid, GetTokenInformation, TokenUser, TOKEN_QUERY, TOKEN_USER};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
};

use super::owned;
use crate::error::{IpcError, Result};

/// The user SID of `process`'s token, as bytes (two SIDs are equal exactly when these are).
fn process_user(process: HANDLE) -> io::Result<Vec<u8>> {
    let mut token: HANDLE = null_mut();
    // SAFETY: `process` is a live process handle (or the current-process pseudo-handle);
    // `token` is a live out-pointer.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let token = owned(token)?;
    // TOKEN_USER holds a pointer into the same buffer: allocate u64s so it is aligned.
    let mut buf = vec![0u64; 32];
    let mut len = 0u32;
    loop {
        let size = (buf.len() * 8) as u32;
        // SAFETY: `buf` is a live, writable, 8-aligned buffer of `size` bytes; `len` is live.
        let ok = unsafe {
            GetTokenInformation(token.as_raw_handle(), TokenUser, buf.as_mut_ptr().cast(), size, &mut len)
        };
        if ok != 0 {
            break;
        }
        if len as usize <= buf.len() * 8 {
            return Err(io::Error::last_os_error());
        }
        buf = vec![0u64; (len as usize).div_ceil(8)];
    }
    // SAFETY: GetTokenInformation(TokenUser) succeeded, so `buf` starts with a TOKEN_USER whose
    // `Sid` points to a valid SID inside `buf`, which lives until the end of this function.
    let sid = unsafe { (*(buf.as_ptr() as *const TOKEN_USER)).User.Sid };
    // SAFETY: `sid` is the valid SID just described.
    let sid_len = unsafe { GetLengthSid(sid) } as usize;
    if sid_len == 0 || sid_len > buf.len() * 8 {
        return Err(io::Error::other("token user SID has an invalid length"));
    }
    // SAFETY: the SID occupies `sid_len` readable bytes inside `buf` (checked above).
    Ok(unsafe { std::slice::from_raw_parts(sid as *const u8, sid_len) }.to_vec())
}

/// This process's user SID (computed once).
fn own_user() -> Result<&'static [u8]> {
    static OWN: OnceLock<Vec<u8>> = OnceLock::new();
    if let Some(sid) = OWN.get() {
        return Ok(sid);
    }
    // SAFETY: the current-process pseudo-handle is always valid.
    let sid = process_user(unsafe { GetCurrentProcess() })?;
    Ok(OWN.get_or_init(|| sid))
}

fn show(sid: &[u8]) -> String {
    let hex: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!("SID {hex}")
}

/// Refuses process `pid` unless it runs as the same user as this process.
pub(super) fn check_same_user(pid: u32) -> Result<()> {
    // SAFETY: plain call; the result is checked by `owned`.
    let process: OwnedHandle = owned(unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) })?;
    let peer = process_user(process.as_raw_handle())?;
    let own = own_user()?;
    if peer != own {
        return Err(IpcError::PeerRefused { peer_user: show(&peer), own_user: show(own) });
    }
    Ok(())
}

/// A short tag of this process's user for pipe names (FNV-1a of the SID), so that two users'
/// listeners of the same name never meet.
pub(super) fn user_tag() -> Result<String> {
    let hash = own_user()?
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    Ok(format!("{hash:016x}"))
}
