//! An in-memory [`FileSystem`] with fault injection and a crash model, for tests and fuzzing.
//!
//! Every file has two states: what the page cache holds (what reads see) and what the disk holds
//! (what survives a power loss). Writes and truncations go to the page cache and are queued;
//! `sync_data` applies the queue to the disk. The directory likewise has a current and a durable
//! set of names; `sync_dir` makes the current one durable. [`MemFs::crash`] then models either a
//! process kill (the page cache survives and reaches the disk) or a power loss (everything not
//! synced is lost, names not synced vanish, names removed without a sync come back).
//!
//! Faults: a torn write (only a prefix of the write that crosses a byte budget lands, then the
//! "machine" stops: every operation fails until [`MemFs::crash`]), short writes, `ENOSPC` past a
//! size limit, failing writes, failing `fsync`s (with Linux's behaviour: the queued writes are
//! dropped, so the page cache keeps data the disk never gets unless it is written again), and
//! direct edits of the stored bytes (bit flips, truncation, arbitrary files).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::FileSystem;

/// What survives [`MemFs::crash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// The process dies (kill -9): the page cache survives and reaches the disk, including
    /// writes whose `fsync` failed.
    KeepPageCache,
    /// The machine loses power: only synced data and synced directory entries survive.
    DropUnsynced,
}

#[derive(Debug)]
enum Op {
    Write(u64, Vec<u8>),
    Truncate(u64),
}

#[derive(Debug, Default)]
struct Inode {
    cache: Vec<u8>,
    disk: Vec<u8>,
    queued: Vec<Op>,
}

fn apply_write(data: &mut Vec<u8>, pos: u64, bytes: &[u8]) {
    let pos = pos as usize;
    if data.len() < pos + bytes.len() {
        data.resize(pos + bytes.len(), 0);
    }
    data[pos..pos + bytes.len()].copy_from_slice(bytes);
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    epoch: u64,
    stopped: bool,
    // faults
    torn_after: Option<u64>,
    space_limit: Option<u64>,
    max_write: Option<usize>,
    failing_writes: u32,
    failing_syncs: u32,
    // counters
    bytes_written: u64,
    syncs: u64,
}

impl State {
    fn check(&self) -> io::Result<()> {
        if self.stopped {
            Err(io::Error::other(
                "memfs: stopped by a torn write, crash() to restart",
            ))
        } else {
            Ok(())
        }
    }

    fn inode(&mut self, file: &MemFile) -> io::Result<&mut Inode> {
        self.check()?;
        if file.epoch != self.epoch {
            return Err(io::Error::other("memfs: file handle from before a crash"));
        }
        self.inodes
            .get_mut(&file.ino)
            .ok_or_else(|| io::Error::other("memfs: no such inode"))
    }

    fn used_bytes(&self) -> u64 {
        let live: BTreeSet<u64> = self.names.values().copied().collect();
        live.iter()
            .filter_map(|ino| self.inodes.get(ino))
            .map(|i| i.cache.len() as u64)
            .sum()
    }
}

/// An open [`MemFs`] file.
#[derive(Debug)]
pub struct MemFile {
    ino: u64,
    epoch: u64,
}

/// In-memory file system with fault injection. Clones share the same files, so a test keeps one
/// handle to inject faults and inspect while a [`Flusher`](crate::Flusher) owns another.
#[derive(Clone, Debug, Default)]
pub struct MemFs {
    state: Rc<RefCell<State>>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("memfs: {} not found", path.display()),
    )
}

impl MemFs {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    /// After `bytes` more bytes have been written, the write that crosses the budget lands only
    /// its prefix up to it, fails, and the file system stops (every operation fails) until
    /// [`crash`](Self::crash). `None` removes the budget.
    pub fn tear_after(&self, bytes: Option<u64>) {
        self.state.borrow_mut().torn_after = bytes;
    }

    /// Total size of all files above which writes fail with `ENOSPC` (a write that partly fits
    /// writes that part and returns a short count). `None`: unlimited.
    pub fn set_space_limit(&self, bytes: Option<u64>) {
        self.state.borrow_mut().space_limit = bytes;
    }

    /// Every write writes at most this many bytes (a short write). `None`: whole writes.
    pub fn set_max_write(&self, bytes: Option<usize>) {
        self.state.borrow_mut().max_write = bytes;
    }

    /// The next `n` writes fail with `EIO` and write nothing.
    pub fn fail_writes(&self, n: u32) {
        self.state.borrow_mut().failing_writes = n;
    }

    /// The next `n` `sync_data` calls fail with `EIO` and drop the writes they would have made
    /// durable (Linux marks the dirty pages clean): only writing the data again saves it.
    pub fn fail_syncs(&self, n: u32) {
        self.state.borrow_mut().failing_syncs = n;
    }

    /// Whether a torn write stopped the file system.
    pub fn is_stopped(&self) -> bool {
        self.state.borrow().stopped
    }

    /// Bytes written so far (all writes, counted as they land).
    pub fn bytes_written(&self) -> u64 {
        self.state.borrow().bytes_written
    }

    /// Successful `sync_data` calls so far.
    pub fn syncs(&self) -> u64 {
        self.state.borrow().syncs
    }

    /// Crashes: open handles become invalid, faults are cleared, the stop is lifted, and what is
    /// left is chosen by `mode`.
    pub fn crash(&self, mode: CrashMode) {
        let mut st = self.state.borrow_mut();
        match mode {
            CrashMode::KeepPageCache => {
                for inode in st.inodes.values_mut() {
                    inode.disk = inode.cache.clone();
                    inode.queued.clear();
                }
                st.durable_names = st.names.clone();
            }
            CrashMode::DropUnsynced => {
                for inode in st.inodes.values_mut() {
                    inode.cache = inode.disk.clone();
                    inode.queued.clear();
                }
                st.names = st.durable_names.clone();
            }
        }
        st.epoch += 1;
        st.stopped = false;
        st.torn_after = None;
        st.space_limit = None;
        st.max_write = None;
        st.failing_writes = 0;
        st.failing_syncs = 0;
    }

    /// Names of the files (current view), sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state.borrow().names.keys().cloned().collect()
    }

    /// The current contents of a file.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state.borrow();
        let ino = st.names.get(path)?;
        Some(st.inodes[ino].cache.clone())
    }

    /// Replaces (or creates) a file with `data`, durably (name and contents), as if another
    /// program had written and synced it. The parent directory is created.
    pub fn put(&self, path: &Path, data: &[u8]) {
        let mut st = self.state.borrow_mut();
        if let Some(parent) = path.parent() {
            st.dirs.insert(parent.to_path_buf());
        }
        let ino = match st.names.get(path) {
            Some(&ino) => ino,
            None => {
                st.next_ino += 1;
                let ino = st.next_ino;
                st.inodes.insert(ino, Inode::default());
                st.names.insert(path.to_path_buf(), ino);
                ino
            }
        };
        st.durable_names.insert(path.to_path_buf(), ino);
        let inode = st.inodes.get_mut(&ino).expect("inode of a name");
        inode.cache = data.to_vec();
        inode.disk = data.to_vec();
        inode.queued.clear();
    }

    /// Flips one bit of a file (page cache and disk). False if there is no such byte.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> bool {
        self.edit(path, |data| {
            if let Some(b) = data.get_mut(offset as usize) {
                *b ^= 1 << (bit % 8);
                true
            } else {
                false
            }
        })
    }

    /// Cuts a file (page cache and disk) to `len` bytes. False if there is no such file.
    pub fn truncate_file(&self, path: &Path, len: u64) -> bool {
        self.edit(path, |data| {
            data.truncate(len as usize);
            true
        })
    }

    /// Removes a file, durably. False if there is no such file.
    pub fn delete(&self, path: &Path) -> bool {
        let mut st = self.state.borrow_mut();
        st.durable_names.remove(path);
        st.names.remove(path).is_some()
    }

    fn edit(&self, path: &Path, f: impl Fn(&mut Vec<u8>) -> bool) -> bool {
        let mut st = self.state.borrow_mut();
        let Some(&ino) = st.names.get(path) else {
            return false;
        };
        let inode = st.inodes.get_mut(&ino).expect("inode of a name");
        let a = f(&mut inode.cache);
        let b = f(&mut inode.disk);
        a && b
    }

    fn new_name(st: &mut State, path: &Path) -> io::Result<u64> {
        let parent = path.parent().unwrap_or(Path::new(""));
        if !st.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        st.next_ino += 1;
        let ino = st.next_ino;
        st.inodes.insert(ino, Inode::default());
        st.names.insert(path.to_path_buf(), ino);
        Ok(ino)
    }
}

impl FileSystem for MemFs {
    type File = MemFile;

    async fn create(&self, path: &Path) -> io::Result<MemFile> {
        let mut st = self.state.borrow_mut();
        st.check()?;
        let ino = match st.names.get(path) {
            Some(&ino) => {
                let inode = st.inodes.get_mut(&ino).expect("inode of a name");
                inode.cache.clear();
                inode.queued.push(Op::Truncate(0));
                ino
            }
            None => Self::new_name(&mut st, path)?,
        };
        Ok(MemFile {
            ino,
            epoch: st.epoch,
        })
    }

    async fn open(&self, path: &Path) -> io::Result<MemFile> {
        let st = self.state.borrow();
        st.check()?;
        let ino = *st.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(MemFile {
            ino,
            epoch: st.epoch,
        })
    }

    async fn write_at(&self, file: &MemFile, pos: u64, data: &[u8]) -> io::Result<usize> {
        let mut st = self.state.borrow_mut();
        st.inode(file)?;
        if st.failing_writes > 0 {
            st.failing_writes -= 1;
            return Err(io::Error::other("memfs: injected write error"));
        }
        let mut n = data.len().min(st.max_write.unwrap_or(usize::MAX));
        if let Some(limit) = st.space_limit {
            let len = st.inode(file)?.cache.len() as u64;
            let growth = (pos + n as u64).saturating_sub(len);
            let used = st.used_bytes();
            if used + growth > limit {
                let room = limit.saturating_sub(used);
                let fits = (len + room).saturating_sub(pos).min(n as u64) as usize;
                if fits == 0 {
                    return Err(io::Error::from_raw_os_error(28)); // ENOSPC
                }
                n = fits;
            }
        }
        let mut torn = false;
        if let Some(budget) = st.torn_after {
            if (n as u64) > budget {
                n = budget as usize;
                torn = true;
            }
            st.torn_after = Some(budget - n as u64);
        }
        st.bytes_written += n as u64;
        let inode = st.inode(file)?;
        apply_write(&mut inode.cache, pos, &data[..n]);
        inode.queued.push(Op::Write(pos, data[..n].to_vec()));
        if torn {
            st.stopped = true;
            return Err(io::Error::other("memfs: torn write"));
        }
        Ok(n)
    }

    async fn read_at(&self, file: &MemFile, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.state.borrow_mut();
        let inode = st.inode(file)?;
        let start = (pos as usize).min(inode.cache.len());
        let n = (inode.cache.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&inode.cache[start..start + n]);
        Ok(n)
    }

    async fn len(&self, file: &MemFile) -> io::Result<u64> {
        let mut st = self.state.borrow_mut();
        Ok(st.inode(file)?.cache.len() as u64)
    }

    async fn sync_data(&self, file: &MemFile) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.inode(file)?;
        let fail = st.failing_syncs > 0;
        if fail {
            st.failing_syncs -= 1;
        } else {
            st.syncs += 1;
        }
        let inode = st.inode(file)?;
        let queued = std::mem::take(&mut inode.queued);
        if fail {
            return Err(io::Error::other("memfs: injected fsync error"));
        }
        for op in queued {
            match op {
                Op::Write(pos, bytes) => apply_write(&mut inode.disk, pos, &bytes),
                Op::Truncate(len) => inode.disk.truncate(len as usize),
            }
        }
        Ok(())
    }

    async fn truncate(&self, file: &MemFile, len: u64) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        let inode = st.inode(file)?;
        inode.cache.resize(len as usize, 0);
        inode.queued.push(Op::Truncate(len));
        Ok(())
    }

    async fn close(&self, _file: MemFile) -> io::Result<()> {
        Ok(())
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.check()?;
        st.names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.check()?;
        for d in dir.ancestors() {
            st.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.check()?;
        let in_dir = |p: &Path| p.parent() == Some(dir);
        let current: Vec<(PathBuf, u64)> = st
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        st.durable_names.retain(|p, _| !in_dir(p));
        st.durable_names.extend(current);
        Ok(())
    }

    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.borrow();
        st.check()?;
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }
}
