//! The unsafe system calls std does not offer: mount(2), umount2(2), sched_setaffinity(2).
//! (The ring's own unsafe — handing buffers to the kernel — is in `ring.rs`.)
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// mount(2) of a FUSE filesystem of type `fuse.<subtype>` with the given options.
pub fn mount_fuse(mountpoint: &Path, subtype: &str, options: &str) -> io::Result<()> {
    let source = c_string(subtype.as_bytes())?;
    let target = c_string(mountpoint.as_os_str().as_bytes())?;
    let fstype = c_string(format!("fuse.{subtype}").as_bytes())?;
    let data = c_string(options.as_bytes())?;
    // SAFETY: all four pointers are valid NUL-terminated strings that outlive the call.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    })
}

/// umount2(2) with `flags` (0, `MNT_FORCE`, `MNT_DETACH`).
pub fn umount(mountpoint: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = c_string(mountpoint.as_os_str().as_bytes())?;
    // SAFETY: `target` is a valid NUL-terminated string.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })
}

/// Pins the calling thread to one CPU, as the kernel picks the ring queue of the CPU the
/// requesting task runs on: the queue's thread then answers on that CPU's caches.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data for which all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET only writes inside `set`; it ignores a cpu beyond the set's size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t and its size is passed; pid 0 is this thread.
    check(unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) })
}
