//! A mounted filesystem and its transport threads: INIT over /dev/fuse, then either the
//! io_uring queues or /dev/fuse readers, and which one is in use, said once at mount.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::dispatch::Filesystem;
use crate::init::{self, Negotiated};
use crate::mount::Mount;
use crate::{devfuse, kernel, ring, Error};

/// How to serve a mount.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Use io_uring when the kernel offers it; otherwise (or if false) /dev/fuse.
    pub prefer_uring: bool,
    /// /dev/fuse reader threads (the ring has one thread per queue, one queue per CPU).
    pub threads: usize,
    /// Entries per ring queue: requests a queue can hold in flight.
    pub queue_depth: usize,
    /// Pin each queue's thread to its CPU (the CPU whose callers the queue serves).
    pub pin_queues: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            prefer_uring: true,
            threads: kernel::possible_cpus(),
            queue_depth: 8,
            pin_queues: true,
        }
    }
}

/// The transport a mount ended up with, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    IoUring { queues: usize, depth: usize },
    DevFuse { threads: usize, reason: Fallback },
}

/// Why a mount serves /dev/fuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// The caller asked for /dev/fuse.
    NotRequested,
    /// INIT did not offer FUSE_OVER_IO_URING: `enable_uring` is the module parameter's
    /// value (`None` when the kernel has no such parameter, i.e. no CONFIG_FUSE_IO_URING).
    NotOffered { enable_uring: Option<bool> },
    /// A queue's REGISTER failed with this errno; the kernel then stays on /dev/fuse.
    RegisterFailed { errno: i32 },
    /// This process cannot create an io_uring (errno of io_uring_setup, e.g. EPERM when
    /// `kernel.io_uring_disabled` is 2), so INIT did not ask for it.
    RingUnavailable { errno: i32 },
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::IoUring { queues, depth } => write!(
                f,
                "transport: io_uring ({queues} queues x {depth} entries, one thread per queue)"
            ),
            Transport::DevFuse { threads, reason } => {
                write!(f, "transport: /dev/fuse ({threads} threads): ")?;
                match reason {
                    Fallback::NotRequested => write!(f, "io_uring not requested"),
                    Fallback::NotOffered { enable_uring: Some(false) } => write!(
                        f,
                        "the kernel does not offer io_uring: {} is N (as root: echo Y > {0})",
                        kernel::ENABLE_URING
                    ),
                    Fallback::NotOffered { .. } => write!(
                        f,
                        "the kernel does not offer io_uring (needs Linux 6.14+ with CONFIG_FUSE_IO_URING)"
                    ),
                    Fallback::RingUnavailable { errno } => write!(
                        f,
                        "this process cannot create an io_uring: {} (see sysctl kernel.io_uring_disabled)",
                        io::Error::from_raw_os_error(*errno)
                    ),
                    Fallback::RegisterFailed { errno } => write!(
                        f,
                        "io_uring queue registration failed: {}",
                        io::Error::from_raw_os_error(*errno)
                    ),
                }
            }
        }
    }
}

/// Requests served so far by each transport (INIT excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub ring: u64,
    pub devfuse: u64,
}

/// A live mount. Dropping it unmounts and waits for the transport threads.
pub struct Session {
    mount: Mount,
    transport: Transport,
    threads: Vec<JoinHandle<io::Result<()>>>,
    served_ring: Arc<AtomicU64>,
    served_devfuse: Arc<AtomicU64>,
}

impl Session {
    /// Mounts `fs` at `mountpoint` (as root) and starts serving it.
    pub fn start(
        mountpoint: &Path,
        fs: Arc<dyn Filesystem>,
        options: Options,
    ) -> Result<Session, Error> {
        let mount = Mount::new(mountpoint, "pgcmk-spike")?;
        let device = Arc::new(mount.device().try_clone().map_err(Error::Device)?);
        let ring_usable = if options.prefer_uring {
            ring::probe().map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
        } else {
            Ok(())
        };
        let negotiated = init::negotiate(&device, options.prefer_uring && ring_usable.is_ok())?;
        let mut session = Session {
            mount,
            transport: Transport::IoUring {
                queues: 0,
                depth: 0,
            },
            threads: Vec::new(),
            served_ring: Arc::default(),
            served_devfuse: Arc::default(),
        };
        let fallback = if negotiated.uring {
            match session.start_ring(&device, &fs, &negotiated, &options) {
                Ok(queues) => {
                    session.transport = Transport::IoUring {
                        queues,
                        depth: options.queue_depth,
                    };
                    // FORGET and INTERRUPT still come over /dev/fuse.
                    session.spawn_readers(&device, &fs, &negotiated, 1);
                    return Ok(session);
                }
                Err(errno) => Fallback::RegisterFailed { errno },
            }
        } else if !options.prefer_uring {
            Fallback::NotRequested
        } else if let (true, Err(errno)) = (negotiated.uring_offered, ring_usable) {
            Fallback::RingUnavailable { errno }
        } else {
            Fallback::NotOffered {
                enable_uring: kernel::enable_uring(),
            }
        };
        let threads = options.threads.max(1);
        session.spawn_readers(&device, &fs, &negotiated, threads);
        session.transport = Transport::DevFuse {
            threads,
            reason: fallback,
        };
        Ok(session)
    }

    fn spawn_readers(
        &mut self,
        device: &Arc<File>,
        fs: &Arc<dyn Filesystem>,
        negotiated: &Negotiated,
        count: usize,
    ) {
        for _ in 0..count {
            let (device, fs, max_write) = (device.clone(), fs.clone(), negotiated.max_write);
            let served = self.served_devfuse.clone();
            self.threads.push(std::thread::spawn(move || {
                devfuse::run_worker(device, fs, max_write, served)
            }));
        }
    }

    /// Starts one queue thread per possible CPU; all must register before the kernel
    /// uses the ring. Returns the number of queues, or the errno of a refused REGISTER.
    fn start_ring(
        &mut self,
        device: &Arc<File>,
        fs: &Arc<dyn Filesystem>,
        negotiated: &Negotiated,
        options: &Options,
    ) -> Result<usize, i32> {
        let queues = kernel::possible_cpus();
        let payload_len = (negotiated.max_write as usize).max(init::MAX_WRITE as usize);
        let (tx, rx) = mpsc::channel();
        for qid in 0..queues {
            let (device, fs, tx) = (device.clone(), fs.clone(), tx.clone());
            let served = self.served_ring.clone();
            let config = ring::QueueConfig {
                qid: qid as u16,
                depth: options.queue_depth,
                payload_len,
                pin: options.pin_queues,
            };
            self.threads.push(std::thread::spawn(move || {
                ring::run_queue(device, fs, config, tx, served)
            }));
        }
        drop(tx);
        // One report per queue (the threads keep their senders while they serve).
        let mut failed = None;
        for result in rx.iter().take(queues) {
            if let Err(e) = result {
                failed.get_or_insert(e.raw_os_error().unwrap_or(libc::EIO));
            }
        }
        failed.map_or(Ok(queues), Err)
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn served(&self) -> Served {
        Served {
            ring: self.served_ring.load(Ordering::Relaxed),
            devfuse: self.served_devfuse.load(Ordering::Relaxed),
        }
    }

    pub fn mountpoint(&self) -> &Path {
        self.mount.mountpoint()
    }

    /// Unmounts and waits for every transport thread; returns the first thread error.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.stop()
    }

    /// Serves until someone else unmounts (`umount MOUNTPOINT`), then returns.
    pub fn wait(mut self) -> Result<(), Error> {
        let result = self.join();
        self.mount.released();
        result
    }

    fn stop(&mut self) -> Result<(), Error> {
        self.mount.unmount().map_err(|source| Error::Unmount {
            mountpoint: self.mount.mountpoint().to_path_buf(),
            source,
        })?;
        self.join()
    }

    fn join(&mut self) -> Result<(), Error> {
        let mut first = Ok(());
        for thread in self.threads.drain(..) {
            let result = thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("transport thread panicked")));
            if let (Err(e), Ok(())) = (result, &first) {
                first = Err(Error::Transport(e));
            }
        }
        first
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
