//! The local backend: `{root}/sha256/ab/cd/<hex>`, written through `{root}/tmp/`.
//!
//! A blob is written to a temporary file in `{root}/tmp/` (the same file system, so moving it
//! is a rename, not a copy), synced, checked, then hard-linked to its address and the
//! directory synced. A hard link, unlike a rename, fails when the address exists: the earlier
//! copy is never replaced, and two processes finishing the same bytes at once both succeed.

use std::path::{Path, PathBuf};

use super::error::{self, BlobError};
use super::spool::{self, Spool};
use super::{BlobReader, Expect, ReaderOrigin, STALE_TEMP_AGE, StoredBlob, relative_key};

pub(crate) struct LocalStore {
    root: PathBuf,
    temp: PathBuf,
}

impl LocalStore {
    pub async fn open(root: &Path) -> Result<LocalStore, BlobError> {
        let temp = root.join("tmp");
        for dir in [root.join("sha256"), temp.clone()] {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| error::io("create the directory", &dir, e))?;
        }
        let removed = spool::sweep_stale(&temp, STALE_TEMP_AGE).await;
        if removed > 0 {
            tracing::info!(removed, dir = %temp.display(), "removed stale temporary blob files");
        }
        Ok(LocalStore {
            root: root.to_path_buf(),
            temp,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn temp_dir(&self) -> &Path {
        &self.temp
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join(relative_key(sha256))
    }

    pub async fn contains(&self, sha256: &str) -> Result<bool, BlobError> {
        let path = self.blob_path(sha256);
        tokio::fs::try_exists(&path)
            .await
            .map_err(|e| error::io("look for", path, e))
    }

    pub async fn size(&self, sha256: &str) -> Result<u64, BlobError> {
        let path = self.blob_path(sha256);
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(meta.len()),
            Err(e) => Err(self.open_error(sha256, path, e)),
        }
    }

    pub async fn reader(&self, sha256: &str) -> Result<BlobReader, BlobError> {
        let path = self.blob_path(sha256);
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) => return Err(self.open_error(sha256, path, e)),
        };
        let size = file
            .metadata()
            .await
            .map_err(|e| error::io("read", &path, e))?
            .len();
        Ok(BlobReader {
            size,
            origin: ReaderOrigin::Local(path),
            inner: Box::pin(file),
        })
    }

    fn open_error(&self, sha256: &str, path: PathBuf, e: std::io::Error) -> BlobError {
        if e.kind() == std::io::ErrorKind::NotFound {
            BlobError::NotFound {
                sha256: sha256.to_owned(),
                location: path.display().to_string(),
            }
        } else {
            error::io("open", path, e)
        }
    }

    pub async fn publish(
        &self,
        mut spool: Spool,
        expect: &Expect,
    ) -> Result<StoredBlob, BlobError> {
        let sealed = spool.seal(true).await?;
        // On a mismatch the spool is dropped here, which removes it: nothing was stored.
        spool::verify(
            &sealed,
            expect,
            &format!("blob written to {}", spool.path().display()),
        )?;
        let target = self.blob_path(&sealed.sha256);
        let (root, temp, dest) = (
            self.root.clone(),
            spool.path().to_path_buf(),
            target.clone(),
        );
        let newly_stored = spool::blocking("publish", &target, move || {
            publish_blocking(&root, &temp, &dest)
        })
        .await?;
        spool.settle();
        Ok(StoredBlob {
            sha256: sealed.sha256,
            size: sealed.size,
            newly_stored,
        })
    }
}

/// Links `temp` at `target` unless something is there already, then removes `temp`. Returns
/// whether `target` is new.
fn publish_blocking(root: &Path, temp: &Path, target: &Path) -> Result<bool, BlobError> {
    let parent = target.parent().unwrap_or(root);
    create_fan_out_dirs(parent)?;
    let newly_stored = match std::fs::hard_link(temp, target) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) if hard_links_unsupported(&e) => {
            // Some file systems (FAT, some network mounts) have no hard links. A rename replaces
            // what is there, so look first; two writers racing here hold the same bytes.
            if target.exists() {
                false
            } else {
                std::fs::rename(temp, target)
                    .map_err(|e| error::io("rename into place", target, e))?;
                spool::sync_dir_blocking(parent)?;
                return Ok(true);
            }
        }
        Err(e) => return Err(error::io("link into place", target, e)),
    };
    match std::fs::remove_file(temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error::io("remove", temp, e)),
    }
    if newly_stored {
        spool::sync_dir_blocking(parent)?;
    }
    Ok(newly_stored)
}

/// Creates `sha256/ab` and `sha256/ab/cd` when missing, syncing the parent of each one created
/// so that a blob published under it is not lost with its directory after a crash.
fn create_fan_out_dirs(cd: &Path) -> Result<(), BlobError> {
    let ab = cd.parent().unwrap_or(cd);
    for dir in [ab, cd] {
        match std::fs::create_dir(dir) {
            Ok(()) => {
                if let Some(parent) = dir.parent() {
                    spool::sync_dir_blocking(parent)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(error::io("create the directory", dir, e)),
        }
    }
    Ok(())
}

fn hard_links_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM) | Some(libc::EOPNOTSUPP) | Some(libc::EMLINK)
    )
}
