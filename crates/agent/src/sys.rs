//! The crate's only unsafe code: thin wrappers over a few Linux system calls
//! (signals, core-dump and ptrace hardening, memory locking, a private mount
//! namespace, the clock tick).

#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Signals the crate sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// PostgreSQL: fast shutdown.
    Int,
    /// Agent: stop the server and exit.
    Term,
    /// Agent: check the key now.
    Hup,
    /// PostgreSQL: immediate shutdown (crash-like, recovered at next start).
    Quit,
    /// Cannot be caught.
    Kill,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Int => libc::SIGINT,
            Signal::Term => libc::SIGTERM,
            Signal::Hup => libc::SIGHUP,
            Signal::Quit => libc::SIGQUIT,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// Sends `signal` to process `pid`.
pub(crate) fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pid <= 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; pid > 0 so it
    // targets exactly one process, never a process group.
    let rc = unsafe { libc::kill(pid, signal.raw()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The kernel's clock ticks per second (`/proc/PID/stat` counts times in them).
pub(crate) fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf(3) takes an integer and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0)
}

/// Makes this process non-dumpable (no core dumps, no ptrace attach by other users,
/// /proc/PID/mem unreadable) and sets its core-file size limit to zero, so the DEK it
/// holds cannot leave through a crash dump.
pub(crate) fn harden_process() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `zero` is a valid, initialized rlimit that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the calling thread (and the threads and processes it starts afterwards)
/// into a mount namespace of its own whose mounts do not propagate back: what it
/// mounts then is seen by no other process on the host, and goes away with the
/// process, even when it is killed.
pub(crate) fn enter_private_mount_namespace() -> io::Result<()> {
    // SAFETY: unshare(2) takes an integer flag and touches no memory of ours.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Without this, mounts made here would still propagate to shared peers.
    // SAFETY: the target is a NUL-terminated literal; a propagation change takes no
    // source, filesystem type or data (null pointers are allowed for them).
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Locks the pages holding `value` into RAM so they are never swapped out.
pub(crate) fn lock_in_memory<T>(value: &T) -> io::Result<()> {
    // SAFETY: the range is exactly the memory of a live, borrowed `T`; mlock only
    // changes paging behaviour of the pages containing it.
    let rc = unsafe { libc::mlock((value as *const T).cast(), std::mem::size_of::<T>()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Undoes [`lock_in_memory`] for `value`.
pub(crate) fn unlock_in_memory<T>(value: &T) {
    // SAFETY: as for mlock: the range is the memory of a live `T`. A failure only
    // leaves the page locked, which is harmless.
    unsafe {
        libc::munlock((value as *const T).cast(), std::mem::size_of::<T>());
    }
}

/// Arranges for the child started by `command` to receive `signal` when the thread
/// that spawns it dies, so a killed agent never leaves PostgreSQL running on a dead
/// mount. Spawn from a thread that lives as long as the child should.
pub(crate) fn die_with_parent(command: &mut Command, signal: Signal) {
    let raw = signal.raw();
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the forked child before exec and calls only
    // prctl(2) and getppid(2), both async-signal-safe; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, raw as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            Ok(())
        });
    }
}
