//! The spike's filesystem: a flat root directory whose files are the regular files of a
//! backing directory, read and written in place (no encryption: the spike measures the
//! transport, not the cipher). Files cannot be created or removed through the mount.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use crate::dispatch::Filesystem;
use crate::reply::{Attr, Errno, Reply};
use crate::request::{Operation, Request};

const ROOT: u64 = 1;
/// The backing directory has one writer, this mount, so the kernel may cache for long.
const TTL_SECS: u64 = 3600;

struct Node {
    name: OsString,
    file: File,
}

/// Passthrough over the regular files present in the backing directory at mount time.
pub struct Passthrough {
    nodes: Vec<Node>,
}

impl Passthrough {
    pub fn open(backing: &Path) -> io::Result<Passthrough> {
        let mut nodes = Vec::new();
        for entry in std::fs::read_dir(backing)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(entry.path())?;
                nodes.push(Node {
                    name: entry.file_name(),
                    file,
                });
            }
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Passthrough { nodes })
    }

    fn node(&self, nodeid: u64) -> Result<&Node, Errno> {
        nodeid
            .checked_sub(ROOT + 1)
            .and_then(|i| self.nodes.get(i as usize))
            .ok_or(Errno(libc::ENOENT))
    }

    fn attr(&self, nodeid: u64) -> Result<Attr, Errno> {
        if nodeid == ROOT {
            return Ok(Attr {
                ino: ROOT,
                size: 0,
                blocks: 0,
                mode: libc::S_IFDIR | 0o755,
                nlink: 2,
                uid: 0,
                gid: 0,
                mtime: std::time::UNIX_EPOCH,
            });
        }
        let meta = self.node(nodeid)?.file.metadata()?;
        Ok(Attr {
            ino: nodeid,
            size: meta.len(),
            blocks: meta.blocks(),
            mode: meta.mode(),
            nlink: 1,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.modified()?,
        })
    }
}

impl Filesystem for Passthrough {
    fn handle(&self, request: Request<'_>) -> Result<Reply, Errno> {
        // File handles are node ids: every open of a node shares its one backing file,
        // which positional reads and writes make safe.
        match request.op {
            Operation::Lookup { name } if request.nodeid == ROOT => {
                let index = self
                    .nodes
                    .iter()
                    .position(|n| n.name == name)
                    .ok_or(Errno(libc::ENOENT))?;
                let attr = self.attr(index as u64 + ROOT + 1)?;
                Ok(Reply::Entry {
                    attr,
                    ttl_secs: TTL_SECS,
                })
            }
            Operation::Lookup { .. } => Err(Errno(libc::ENOTDIR)),
            Operation::Getattr => Ok(Reply::Attr {
                attr: self.attr(request.nodeid)?,
                ttl_secs: TTL_SECS,
            }),
            Operation::Setattr { other: true, .. } => Err(Errno(libc::EPERM)),
            Operation::Setattr { size, .. } => {
                if let Some(size) = size {
                    self.node(request.nodeid)?.file.set_len(size)?;
                }
                Ok(Reply::Attr {
                    attr: self.attr(request.nodeid)?,
                    ttl_secs: TTL_SECS,
                })
            }
            Operation::Open { flags } => {
                self.node(request.nodeid)?;
                Ok(Reply::Opened {
                    fh: request.nodeid,
                    direct_io: flags & libc::O_DIRECT != 0,
                })
            }
            Operation::Read { fh, offset, buf } => {
                let file = &self.node(fh)?.file;
                let mut done = 0;
                while done < buf.len() {
                    match file.read_at(&mut buf[done..], offset + done as u64)? {
                        0 => break,
                        n => done += n,
                    }
                }
                Ok(Reply::Data(done))
            }
            Operation::Write { fh, offset, data } => {
                self.node(fh)?.file.write_all_at(data, offset)?;
                Ok(Reply::Written(data.len() as u32))
            }
            Operation::Fsync { fh, datasync } => {
                let file = &self.node(fh)?.file;
                if datasync {
                    file.sync_data()?
                } else {
                    file.sync_all()?
                }
                Ok(Reply::Empty)
            }
            Operation::Flush { fh } | Operation::Release { fh } => {
                self.node(fh)?;
                Ok(Reply::Empty)
            }
            Operation::Statfs => Ok(Reply::Statfs {
                blocks: 0,
                free: 0,
                block_size: 4096,
            }),
            Operation::Forget | Operation::Interrupt => Ok(Reply::NoReply),
            Operation::Destroy => Ok(Reply::Empty),
            Operation::Unsupported { .. } => Err(Errno(libc::ENOSYS)),
        }
    }
}
