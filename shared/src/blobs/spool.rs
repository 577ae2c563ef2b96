//! A temporary file that hashes and counts what is written to it: where every blob waits until
//! its address is known and checked, in both backends.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aws_lc_rs::digest;
use tokio::io::{AsyncWriteExt, BufWriter};

use super::Expect;
use super::error::{self, BlobError};

/// Temporary names start with this, so that the stale-file sweep removes only our files.
pub(crate) const TEMP_PREFIX: &str = "blob-";

/// Large enough that a multi-megabyte download crosses into tokio's blocking pool a few times per
/// megabyte, not once per network read.
const WRITE_BUFFER: usize = 256 * 1024;

pub(crate) struct Spool {
    path: PathBuf,
    file: Option<BufWriter<tokio::fs::File>>,
    hasher: digest::Context,
    written: u64,
    failed: bool,
    /// Set once the file was published, renamed or removed: nothing left for `Drop` to undo.
    settled: bool,
}

/// A spool's final length and hash, its file closed.
pub(crate) struct Sealed {
    pub sha256: String,
    pub size: u64,
}

impl Spool {
    /// A new temporary file in `dir` (which exists).
    pub async fn create(dir: &Path) -> Result<Spool, BlobError> {
        Self::create_named(dir, TEMP_PREFIX).await
    }

    /// A new temporary file in `dir` whose name starts with `prefix`.
    pub async fn create_named(dir: &Path, prefix: &str) -> Result<Spool, BlobError> {
        let path = dir.join(format!("{prefix}{}", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| error::io("create", &path, e))?;
        Ok(Spool {
            path,
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            hasher: digest::Context::new(&digest::SHA256),
            written: 0,
            failed: false,
            settled: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        let Some(file) = self.file.as_mut().filter(|_| !self.failed) else {
            return Err(BlobError::WriterFailed {
                path: self.path.clone(),
            });
        };
        if let Err(e) = file.write_all(bytes).await {
            // Some of the bytes may be in the file and none in the hash: the two no longer agree.
            self.failed = true;
            return Err(error::io("write", &self.path, e));
        }
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Flushes and closes the file, `durable`: synced to disk first (the local store publishes
    /// this very file; an S3 spool is read back at once and need not survive a crash).
    pub async fn seal(&mut self, durable: bool) -> Result<Sealed, BlobError> {
        let Some(mut file) = self.file.take().filter(|_| !self.failed) else {
            return Err(BlobError::WriterFailed {
                path: self.path.clone(),
            });
        };
        file.flush()
            .await
            .map_err(|e| error::io("write", &self.path, e))?;
        if durable {
            file.get_mut()
                .sync_all()
                .await
                .map_err(|e| error::io("sync", &self.path, e))?;
        }
        let hash = self.hasher.clone().finish();
        Ok(Sealed {
            sha256: to_hex(hash.as_ref()),
            size: self.written,
        })
    }

    /// Renames the (sealed) file to `target`, replacing it, and syncs the directory so that the
    /// rename survives a crash.
    pub async fn rename_to(mut self, target: &Path) -> Result<(), BlobError> {
        tokio::fs::rename(&self.path, target)
            .await
            .map_err(|e| error::io("rename into place", target, e))?;
        self.settled = true;
        if let Some(dir) = target.parent() {
            sync_dir(dir).await?;
        }
        Ok(())
    }

    /// Removes the file now.
    pub async fn remove(mut self) -> Result<(), BlobError> {
        self.file = None;
        self.settled = true;
        match tokio::fs::remove_file(&self.path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(error::io("remove", &self.path, e)),
        }
    }

    /// Tells `Drop` that the file was moved away by the caller.
    pub fn settle(&mut self) {
        self.settled = true;
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.settled {
            // Best effort: an unlink is one quick system call, and what it misses the sweep at
            // the next open removes.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Checks a sealed spool against `expect`; `subject` says what was checked, for the message.
pub(crate) fn verify(sealed: &Sealed, expect: &Expect, subject: &str) -> Result<(), BlobError> {
    if let Some(size) = expect.size
        && size != sealed.size
    {
        return Err(BlobError::Corrupt {
            subject: subject.to_owned(),
            what: "size",
            expected: size.to_string(),
            actual: sealed.size.to_string(),
        });
    }
    if let Some(sha256) = &expect.sha256
        && *sha256 != sealed.sha256
    {
        return Err(BlobError::Corrupt {
            subject: subject.to_owned(),
            what: "sha256",
            expected: sha256.clone(),
            actual: sealed.sha256.clone(),
        });
    }
    Ok(())
}

/// Syncs a directory, so that the names created or removed in it survive a crash.
pub(crate) async fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    let owned = dir.to_path_buf();
    blocking("sync the directory", dir, move || sync_dir_blocking(&owned)).await
}

/// Runs file-system calls that tokio has no async form of (or that belong together) on the
/// blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    action: &'static str,
    path: &Path,
    work: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => Err(error::io(action, path, std::io::Error::other(e))),
    }
}

pub(crate) fn sync_dir_blocking(dir: &Path) -> Result<(), BlobError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| error::io("sync the directory", dir, e))
}

/// Removes our temporary files in `dir` last modified before `max_age` ago: what processes that
/// crashed or were killed left behind. Returns how many were removed. Failures are skipped: the
/// next open tries again.
pub(crate) async fn sweep_stale(dir: &Path, max_age: std::time::Duration) -> usize {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let ours = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .is_some_and(|age| age > max_age);
            if ours && stale && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    })
    .await
    .unwrap_or(0)
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_and_padded() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
    }
}
