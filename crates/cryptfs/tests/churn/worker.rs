//! One worker thread: creates, writes, syncs, truncates, renames, unlinks and verifies its
//! own files against an exact model, while holding other workers' files open and checking
//! that everything read from them belongs to them.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::content::{fill, foreign_byte, id_in, FileId};
use super::rng::Rng;

const BLOCK: u64 = 8192;
/// Files a thread keeps at most (more are unlinked first).
const MAX_OWN: usize = 8;
/// Other workers' files a thread holds open at most.
const MAX_HELD: usize = 6;
/// Unlinked files a thread keeps open at most (PostgreSQL bounds its descriptors too).
const MAX_ORPHANS: usize = 16;

/// Counts of what one thread did; the runner checks that enough happened.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub creates: u64,
    pub verified_bytes: u64,
    pub foreign_checks: u64,
    pub unlinks_while_open: u64,
    pub renames_over: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Self) {
        self.creates += o.creates;
        self.verified_bytes += o.verified_bytes;
        self.foreign_checks += o.foreign_checks;
        self.unlinks_while_open += o.unlinks_while_open;
        self.renames_over += o.renames_over;
    }
}

/// A file this thread created: what it must contain, exactly.
struct OwnFile {
    id: FileId,
    /// `None` once unlinked or replaced (then it is reachable only through `fd`).
    name: Option<String>,
    content: Vec<u8>,
    fd: Option<File>,
    version: u8,
}

impl OwnFile {
    /// Its open descriptor, reopening it by name if it was closed (its size must be
    /// what the last write or truncation left).
    fn open_in(&mut self, dir: &Path) -> Result<&File, String> {
        if self.fd.is_none() {
            let name = self.name.as_deref().expect("closed files are named");
            let fd = OpenOptions::new()
                .read(true)
                .write(true)
                .open(dir.join(name))
                .map_err(|e| format!("reopen {name}: {}", errno(&e)))?;
            let size = fd
                .metadata()
                .map_err(|e| format!("fstat {name}: {}", errno(&e)))?
                .len();
            if size != self.content.len() as u64 {
                return Err(format!(
                    "reopened {name} is {size} bytes, its last write/truncate left {}",
                    self.content.len()
                ));
            }
            self.fd = Some(fd);
        }
        Ok(self.fd.as_ref().expect("just opened"))
    }
}

/// Another worker's file, held open.
struct Held {
    name: String,
    fd: File,
    /// Learned from the first word that carries a whole id.
    id: Option<FileId>,
}

pub struct Worker {
    dir: PathBuf,
    /// `w<worker>t<thread>-`: the prefix of this thread's names.
    prefix: String,
    id_base: u32,
    seq: u32,
    rng: Rng,
    own: Vec<OwnFile>,
    orphans: Vec<OwnFile>,
    held: VecDeque<Held>,
    trace: VecDeque<String>,
    stats: Stats,
}

type Step = Result<(), String>;

fn errno(e: &io::Error) -> String {
    format!("{e} (errno {})", e.raw_os_error().unwrap_or(0))
}

/// Closes `fd` and reports what close returned (std ignores it; a FUSE flush error
/// shows up only here, as PostgreSQL's "could not close file").
fn close_checked(fd: File) -> io::Result<()> {
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` was just released from a `File`, so it is open and owned here only.
    if unsafe { libc::close(raw) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn drop_cached_pages(fd: &File) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor; no memory is passed.
    let rc = unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Reads `len` bytes at `offset` (fewer only at end of file).
fn read_at(fd: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut done = 0;
    while done < len {
        match fd.read_at(&mut buf[done..], offset + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    buf.truncate(done);
    Ok(buf)
}

impl Worker {
    pub fn new(dir: &Path, worker: u32, thread: u32, threads: u32, seed: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            prefix: format!("w{worker}t{thread}-"),
            // Third id byte: which thread (never 0); the other two count creations.
            id_base: (worker * threads + thread) % 255 + 1,
            seq: 0,
            rng: Rng::new(seed),
            own: Vec::new(),
            orphans: Vec::new(),
            held: VecDeque::new(),
            trace: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Runs until `deadline`; `Err` describes the first violation with the thread's last
    /// operations.
    pub fn run(mut self, deadline: Instant) -> Result<Stats, String> {
        while Instant::now() < deadline {
            if let Err(violation) = self.step() {
                let trace: Vec<_> = self.trace.iter().map(String::as_str).collect();
                return Err(format!(
                    "{violation}\n  last operations of {}*: {}",
                    self.prefix,
                    trace.join("; ")
                ));
            }
        }
        self.finish()?;
        Ok(self.stats)
    }

    fn note(&mut self, op: String) {
        if self.trace.len() == 24 {
            self.trace.pop_front();
        }
        self.trace.push_back(op);
    }

    fn step(&mut self) -> Step {
        if self.own.len() < 2 || (self.own.len() < MAX_OWN && self.rng.chance(12)) {
            return self.create();
        }
        match self.rng.below(100) {
            0..=29 => self.write(),
            30..=36 => self.sync(),
            37..=44 => self.truncate(),
            45..=56 => self.verify(),
            57..=63 => self.close(),
            64..=72 => self.unlink(),
            73..=77 => self.rename_over(),
            78..=86 => self.hold_foreign(),
            87..=93 => self.check_held(),
            _ => self.check_orphan(),
        }
    }

    fn pick_own(&mut self) -> usize {
        self.rng.below(self.own.len() as u64) as usize
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn create(&mut self) -> Step {
        self.seq += 1;
        let name = format!("{}{}", self.prefix, self.seq);
        let id = (self.seq % 255 + 1) | ((self.seq / 255) % 255 + 1) << 8 | self.id_base << 16;
        self.note(format!("create {name} id {id:06x}"));
        let fd = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(self.path(&name))
            .map_err(|e| format!("create {name}: {}", errno(&e)))?;
        let size = fd
            .metadata()
            .map_err(|e| format!("fstat new {name}: {}", errno(&e)))?
            .len();
        let head = read_at(&fd, 0, BLOCK as usize)
            .map_err(|e| format!("read new {name}: {}", errno(&e)))?;
        if size != 0 || !head.is_empty() {
            return Err(format!(
                "new file {name} (O_CREAT|O_EXCL) is {size} bytes long and reads {} bytes \
                 (carrying file id {:?}) — another file's data",
                head.len(),
                id_in(0, &head).map(|i| format!("{i:06x}"))
            ));
        }
        self.stats.creates += 1;
        self.own.push(OwnFile {
            id,
            name: Some(name),
            content: Vec::new(),
            fd: Some(fd),
            version: 0,
        });
        Ok(())
    }

    /// The open descriptor of own file `i`, reopening it by name if it was closed.
    fn fd_of(&mut self, i: usize) -> Result<&File, String> {
        self.own[i].open_in(&self.dir)
    }

    fn write(&mut self) -> Step {
        let i = self.pick_own();
        let len = self.own[i].content.len() as u64;
        let (offset, size) = if self.rng.chance(70) {
            (self.rng.below(len / BLOCK + 3) * BLOCK, BLOCK as usize)
        } else {
            (
                self.rng.below(len + 2 * BLOCK),
                1 + self.rng.below(12_000) as usize,
            )
        };
        let id = self.own[i].id;
        self.note(format!("write {id:06x} [{offset}, +{size})"));
        let file = &mut self.own[i];
        file.version = file.version.wrapping_add(1).max(1);
        let data = fill(id, file.version, offset, size);
        file.open_in(&self.dir)?
            .write_all_at(&data, offset)
            .map_err(|e| format!("write {id:06x} at {offset}: {}", errno(&e)))?;
        let end = offset as usize + size;
        if file.content.len() < end {
            file.content.resize(end, 0);
        }
        file.content[offset as usize..end].copy_from_slice(&data);
        Ok(())
    }

    fn sync(&mut self) -> Step {
        let i = self.pick_own();
        let data_only = self.rng.chance(50);
        self.note(format!(
            "fsync {:06x} data_only={data_only}",
            self.own[i].id
        ));
        let fd = self.fd_of(i)?;
        let synced = if data_only {
            fd.sync_data()
        } else {
            fd.sync_all()
        };
        synced.map_err(|e| format!("fsync: {}", errno(&e)))
    }

    fn truncate(&mut self) -> Step {
        let i = self.pick_own();
        let len = self.own[i].content.len() as u64;
        let mut new_len = self.rng.below(len + 2 * BLOCK + 1);
        if self.rng.chance(50) {
            new_len -= new_len % BLOCK;
        }
        let by_path = self.own[i].fd.is_none();
        self.note(format!(
            "truncate {:06x} {len} -> {new_len} by_path={by_path}",
            self.own[i].id
        ));
        let truncated = if by_path {
            let name = self.own[i].name.clone().expect("own files are named");
            OpenOptions::new()
                .write(true)
                .open(self.path(&name))
                .and_then(|fd| fd.set_len(new_len).and_then(|()| close_checked(fd)))
        } else {
            self.fd_of(i)?.set_len(new_len)
        };
        truncated.map_err(|e| format!("truncate to {new_len}: {}", errno(&e)))?;
        self.own[i].content.resize(new_len as usize, 0);
        Ok(())
    }

    /// Reads the whole file back and compares it with the model; sometimes after making
    /// it durable and dropping its cached pages, so the bytes come from the filesystem.
    fn verify_file(&mut self, file: &OwnFile) -> Step {
        let fd = file.fd.as_ref().expect("verified files are open");
        let label = match &file.name {
            Some(name) => format!("{name} (id {:06x})", file.id),
            None => format!("unlinked file id {:06x}", file.id),
        };
        if self.rng.chance(30) {
            fd.sync_data()
                .and_then(|()| drop_cached_pages(fd))
                .map_err(|e| format!("sync+drop cache {label}: {}", errno(&e)))?;
        }
        let size = fd
            .metadata()
            .map_err(|e| format!("fstat {label}: {}", errno(&e)))?
            .len();
        let want = &file.content;
        let got = read_at(fd, 0, want.len() + BLOCK as usize)
            .map_err(|e| format!("read {label}: {}", errno(&e)))?;
        if size != want.len() as u64 || got.len() != want.len() {
            return Err(format!(
                "{label}: fstat says {size} bytes and a read returns {}, but {} were written",
                got.len(),
                want.len()
            ));
        }
        if let Some(at) = got.iter().zip(want).position(|(g, w)| g != w) {
            let around = &got[at - at % 8..(at - at % 8 + 64).min(got.len())];
            return Err(format!(
                "{label}: byte {at} reads {:#04x}, its last write put {:#04x} there; the bytes \
                 there carry file id {:?}",
                got[at],
                want[at],
                id_in((at - at % 8) as u64, around).map(|i| format!("{i:06x}"))
            ));
        }
        self.stats.verified_bytes += want.len() as u64;
        Ok(())
    }

    fn verify(&mut self) -> Step {
        let i = self.pick_own();
        self.note(format!("verify {:06x}", self.own[i].id));
        self.fd_of(i)?;
        let file = self.own.swap_remove(i);
        let checked = self.verify_file(&file);
        self.own.push(file);
        checked
    }

    fn close(&mut self) -> Step {
        let i = self.pick_own();
        let file = &mut self.own[i];
        let Some(fd) = file.fd.take() else {
            return Ok(());
        };
        let id = file.id;
        self.note(format!("close {id:06x}"));
        close_checked(fd).map_err(|e| format!("close {id:06x}: {}", errno(&e)))
    }

    /// Removes own file `i` from the namespace: an open file lives on as an orphan.
    fn orphan(&mut self, i: usize) -> Step {
        let mut file = self.own.swap_remove(i);
        file.name = None;
        if file.fd.is_some() {
            self.stats.unlinks_while_open += 1;
            self.orphans.push(file);
        }
        while self.orphans.len() > MAX_ORPHANS {
            self.check_orphan()?;
        }
        Ok(())
    }

    fn unlink(&mut self) -> Step {
        let i = self.pick_own();
        let name = self.own[i].name.clone().expect("own files are named");
        self.note(format!("unlink {name} open={}", self.own[i].fd.is_some()));
        fs::remove_file(self.path(&name)).map_err(|e| format!("unlink {name}: {}", errno(&e)))?;
        self.orphan(i)
    }

    /// Renames one own file over another, as PostgreSQL's durable_rename does.
    fn rename_over(&mut self) -> Step {
        let from = self.pick_own();
        let to = self.pick_own();
        if from == to {
            return Ok(());
        }
        let from_name = self.own[from].name.clone().expect("own files are named");
        let to_name = self.own[to].name.clone().expect("own files are named");
        self.note(format!(
            "rename {from_name} over {to_name} (open={})",
            self.own[to].fd.is_some()
        ));
        fs::rename(self.path(&from_name), self.path(&to_name))
            .map_err(|e| format!("rename {from_name} -> {to_name}: {}", errno(&e)))?;
        self.stats.renames_over += 1;
        self.own[from].name = Some(to_name);
        self.orphan(to)
    }

    fn hold_foreign(&mut self) -> Step {
        let names: Vec<String> = fs::read_dir(&self.dir)
            .map_err(|e| format!("readdir: {}", errno(&e)))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with(&self.prefix))
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let name = names[self.rng.below(names.len() as u64) as usize].clone();
        match File::open(self.path(&name)) {
            Ok(fd) => {
                self.note(format!("hold {name}"));
                if self.held.len() == MAX_HELD {
                    let mut oldest = self.held.pop_front().expect("held is full");
                    self.check_one(&mut oldest)?;
                }
                self.held.push_back(Held { name, fd, id: None });
                Ok(())
            }
            // Its owner removed it meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("open other worker's {name}: {}", errno(&e))),
        }
    }

    /// Reads the oldest held file and keeps holding it.
    fn check_held(&mut self) -> Step {
        let Some(mut held) = self.held.pop_front() else {
            return Ok(());
        };
        self.check_one(&mut held)?;
        self.held.push_back(held);
        Ok(())
    }

    /// Every byte of a held file must belong to it (or be zero).
    fn check_one(&mut self, held: &mut Held) -> Step {
        self.note(format!("check held {}", held.name));
        let data = read_at(&held.fd, 0, 1 << 20)
            .map_err(|e| format!("read held {}: {}", held.name, errno(&e)))?;
        held.id = held.id.or_else(|| id_in(0, &data));
        if let Some(id) = held.id {
            if let Some((at, byte)) = foreign_byte(id, 0, &data) {
                let word = at - at % 8;
                return Err(format!(
                    "other worker's {} (id {id:06x}): byte {at} is {byte:#04x}, not this file's \
                     (the word there carries id {:?})",
                    held.name,
                    id_in(word, &data[word as usize..]).map(|i| format!("{i:06x}"))
                ));
            }
        }
        self.stats.foreign_checks += 1;
        Ok(())
    }

    /// Verifies an unlinked-but-open file still holds its own bytes, then closes it.
    fn check_orphan(&mut self) -> Step {
        if self.orphans.is_empty() {
            return Ok(());
        }
        let i = self.rng.below(self.orphans.len() as u64) as usize;
        let file = self.orphans.swap_remove(i);
        self.note(format!("check orphan {:06x}", file.id));
        self.verify_file(&file)?;
        let fd = file.fd.expect("orphans are open");
        close_checked(fd).map_err(|e| format!("close unlinked {:06x}: {}", file.id, errno(&e)))
    }

    /// Verifies and closes everything, then removes its files.
    fn finish(&mut self) -> Step {
        while !self.orphans.is_empty() {
            self.check_orphan()?;
        }
        for mut file in std::mem::take(&mut self.own) {
            file.open_in(&self.dir)?;
            self.verify_file(&file)?;
            let name = file.name.expect("own files are named");
            close_checked(file.fd.expect("opened above"))
                .map_err(|e| format!("close {name}: {}", errno(&e)))?;
            fs::remove_file(self.path(&name))
                .map_err(|e| format!("unlink {name}: {}", errno(&e)))?;
        }
        while let Some(mut held) = self.held.pop_front() {
            self.check_one(&mut held)?;
        }
        Ok(())
    }
}
