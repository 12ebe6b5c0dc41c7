//! The file-system seam: the operations the flusher and recovery need, with a blocking
//! implementation on `std::fs` and one on glommio's io_uring buffered files.

use std::io;
use std::path::Path;

/// File operations used by the [`Flusher`](crate::Flusher) and by recovery.
///
/// Methods are `async` so that the glommio implementation can submit them to io_uring; the
/// [`StdFs`] and [`MemFs`](crate::MemFs) futures complete on their first poll, which is what lets
/// [`recover_on`](crate::recover_on) drive them without an executor.
#[allow(async_fn_in_trait)]
pub trait FileSystem {
    /// An open file.
    type File;
    /// Creates a file for reading and writing, truncating it if it exists.
    async fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    async fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Writes `data` at `pos`; may write less than asked (returns how much).
    async fn write_at(&self, file: &Self::File, pos: u64, data: &[u8]) -> io::Result<usize>;
    /// Reads into `buf` from `pos`; may read less than asked, 0 at the end of the file.
    async fn read_at(&self, file: &Self::File, pos: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Length of the file in bytes.
    async fn len(&self, file: &Self::File) -> io::Result<u64>;
    /// `fdatasync`: the file's data is durable when this returns `Ok`.
    async fn sync_data(&self, file: &Self::File) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    async fn truncate(&self, file: &Self::File, len: u64) -> io::Result<()>;
    /// Closes the file.
    async fn close(&self, file: Self::File) -> io::Result<()>;
    /// Removes a file by name.
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory and its missing parents.
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// `fsync` of a directory: creations and removals of its entries are durable when it
    /// returns `Ok`.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (any order).
    async fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
}

/// `std::fs`, blocking: every future is ready on its first poll. Used by recovery and tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

impl FileSystem for StdFs {
    type File = std::fs::File;

    async fn create(&self, path: &Path) -> io::Result<Self::File> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }
    async fn open(&self, path: &Path) -> io::Result<Self::File> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(file)
    }
    async fn write_at(&self, file: &Self::File, pos: u64, data: &[u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::write_at(file, data, pos)
    }
    async fn read_at(&self, file: &Self::File, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(file, buf, pos)
    }
    async fn len(&self, file: &Self::File) -> io::Result<u64> {
        Ok(file.metadata()?.len())
    }
    async fn sync_data(&self, file: &Self::File) -> io::Result<()> {
        file.sync_data()
    }
    async fn truncate(&self, file: &Self::File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }
    async fn close(&self, file: Self::File) -> io::Result<()> {
        drop(file);
        Ok(())
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
}

/// glommio's [`BufferedFile`](glommio::io::BufferedFile): positional writes and `fdatasync`
/// through io_uring, page-cache backed. Only usable inside a glommio executor (its futures need
/// the executor's reactor). Directory listing and creation are blocking `std::fs` calls: they
/// happen once per segment, not per record.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlommioFs;

impl FileSystem for GlommioFs {
    type File = glommio::io::BufferedFile;

    async fn create(&self, path: &Path) -> io::Result<Self::File> {
        Ok(glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .buffered_open(path)
            .await?)
    }
    async fn open(&self, path: &Path) -> io::Result<Self::File> {
        if !std::fs::metadata(path)?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(path)
            .await?)
    }
    async fn write_at(&self, file: &Self::File, pos: u64, data: &[u8]) -> io::Result<usize> {
        Ok(file.write_at(data.to_vec(), pos).await?)
    }
    async fn read_at(&self, file: &Self::File, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let read = file.read_at(pos, buf.len()).await?;
        let n = read.len().min(buf.len());
        buf[..n].copy_from_slice(&read[..n]);
        Ok(n)
    }
    async fn len(&self, file: &Self::File) -> io::Result<u64> {
        Ok(file.file_size().await?)
    }
    async fn sync_data(&self, file: &Self::File) -> io::Result<()> {
        Ok(file.fdatasync().await?)
    }
    async fn truncate(&self, file: &Self::File, len: u64) -> io::Result<()> {
        Ok(file.truncate(len).await?)
    }
    async fn close(&self, file: Self::File) -> io::Result<()> {
        Ok(file.close().await?)
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        Ok(glommio::io::remove(path).await?)
    }
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let d = glommio::io::Directory::open(dir).await?;
        let synced = d.sync().await;
        let closed = d.close().await;
        synced?;
        Ok(closed?)
    }
    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.list(dir).await
    }
}
