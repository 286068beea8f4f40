//! A read-only tantivy [`Directory`] over an index bundle (see `tracelight_storage::bundle`):
//! the bundle file is mapped once and each index file is a slice of the mapping, so opening a
//! segment's index from the disk cache copies nothing.

use std::collections::HashMap;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    Directory, DirectoryLock, FileHandle, Lock, OwnedBytes, WatchCallback, WatchHandle, WritePtr,
};

/// A mapped bundle file. Bundles in the cache are never rewritten in place (a new entry is
/// renamed over an old name, which leaves this mapping on the old inode).
struct Mapped(memmap2::Mmap);

impl Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

// SAFETY: the bytes live in the mapping, which does not move when `Mapped` does.
unsafe impl stable_deref_trait::StableDeref for Mapped {}

#[derive(Clone)]
pub struct BundleDirectory {
    bytes: OwnedBytes,
    files: Arc<HashMap<PathBuf, std::ops::Range<usize>>>,
    origin: Arc<Path>,
}

impl std::fmt::Debug for BundleDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BundleDirectory({})", self.origin.display())
    }
}

impl BundleDirectory {
    /// Maps the open bundle `file` (`origin` names it in errors) and reads its file list.
    pub fn open(file: &std::fs::File, origin: &Path) -> Result<BundleDirectory, String> {
        let path = origin;
        // SAFETY: cache entries are immutable files; nothing writes to this inode again.
        let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| format!("map {}: {e}", path.display()))?;
        let bytes = OwnedBytes::new(Mapped(map));
        let entries =
            tracelight_storage::bundle::entries(bytes.as_slice()).map_err(|e| format!("{}: {e}", path.display()))?;
        let files = entries
            .into_iter()
            .map(|e| (PathBuf::from(e.name), e.offset as usize..(e.offset + e.len) as usize))
            .collect();
        Ok(BundleDirectory { bytes, files: Arc::new(files), origin: Arc::from(path) })
    }

    fn slice(&self, path: &Path) -> Result<OwnedBytes, OpenReadError> {
        let range = self.files.get(path).ok_or_else(|| OpenReadError::FileDoesNotExist(path.to_path_buf()))?;
        Ok(self.bytes.slice(range.clone()))
    }
}

fn read_only(path: &Path) -> Arc<io::Error> {
    Arc::new(io::Error::new(io::ErrorKind::PermissionDenied, format!("{} is in a read-only bundle", path.display())))
}

impl Directory for BundleDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        Ok(Arc::new(self.slice(path)?))
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        Err(DeleteError::IoError { io_error: read_only(path), filepath: path.to_path_buf() })
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        Ok(self.files.contains_key(path))
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        Err(OpenWriteError::IoError { io_error: read_only(path), filepath: path.to_path_buf() })
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        Ok(self.slice(path)?.as_slice().to_vec())
    }

    fn atomic_write(&self, path: &Path, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("{} is in a read-only bundle", path.display())))
    }

    fn sync_directory(&self) -> io::Result<()> {
        Ok(())
    }

    /// Nothing writes a bundle, so a reader's lock (tantivy takes the meta lock to open a
    /// reader) guards nothing: granted at once.
    fn acquire_lock(&self, _lock: &Lock) -> Result<DirectoryLock, LockError> {
        Ok(DirectoryLock::from(Box::new(())))
    }

    fn watch(&self, _callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        Ok(WatchHandle::empty())
    }
}
