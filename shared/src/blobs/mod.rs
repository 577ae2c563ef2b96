//! The content-addressed blob store for downloaded media: bytes in, a SHA-256 address out, the
//! same bytes back by that address. One interface, two backends: a local directory (the
//! default) and an S3-compatible bucket for fleets of workers on many machines
//! (`[media.store]`, docs/media.md; ADR 0011 says why these crates and this shape).
//!
//! It owns the blobs' layout (`sha256/ab/cd/<hex>`), their verification (size and hash
//! checked before anything becomes visible), their atomic publication and deduplication, and the
//! cleanup of what unfinished writes leave behind.
//!
//! It must not know what a blob is (a picture, a video, whose post) nor where its bytes come
//! from: that belongs to the worker, which records addresses beside its results. It must never
//! hold a whole blob in memory, never make visible a blob that was not verified, and never put a
//! credential in an error message.

mod error;
mod local;
mod s3;
mod spool;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::config::{BlobBackend, BlobStoreConfig};

pub use error::BlobError;
use local::LocalStore;
use s3::S3Store;
use spool::Spool;

/// Temporary files this old are left over from a crashed or killed process: a store removes
/// them when it opens. Longer than any single download is expected to take.
pub const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A blob store: cheap to clone, one per process is enough.
#[derive(Clone)]
pub struct BlobStore {
    backend: Arc<Backend>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Where it is, never how it signs in.
        f.debug_struct("BlobStore")
            .field("at", &self.describe())
            .finish()
    }
}

/// A closed set of backends, matched in each operation (ADR 0011: an enum rather than a trait
/// object, because the set is ours, and async methods on an enum need no boxing).
enum Backend {
    Local(LocalStore),
    S3(S3Store),
}

/// What a finished write must match. `None` checks nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    /// The length the source announced (e.g. `Content-Length`).
    pub size: Option<u64>,
    /// The SHA-256 the caller already knows, 64 lower-case hex digits.
    pub sha256: Option<String>,
}

/// A blob made durable and visible under its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// The address: the bytes' SHA-256, 64 lower-case hex digits.
    pub sha256: String,
    pub size: u64,
    /// `false` when the store already held these bytes; the earlier copy was kept.
    pub newly_stored: bool,
}

impl BlobStore {
    /// Opens the store `config` describes, creating the local directories it needs, and removes
    /// temporary files older than [`STALE_TEMP_AGE`]. Nothing is asked of an S3 server yet: an
    /// unreachable one is reported by the first operation.
    pub async fn open(config: &BlobStoreConfig) -> Result<BlobStore, BlobError> {
        config
            .check()
            .map_err(|(key, message)| BlobError::Config { key, message })?;
        let backend = match config.backend {
            BlobBackend::Local => Backend::Local(LocalStore::open(&config.path).await?),
            BlobBackend::S3 => Backend::S3(S3Store::open(config).await?),
        };
        Ok(BlobStore {
            backend: Arc::new(backend),
        })
    }

    /// Where the blobs are, for logs: a directory or `s3://bucket/prefix` at an endpoint.
    pub fn describe(&self) -> String {
        match &*self.backend {
            Backend::Local(local) => format!("local directory {}", local.root().display()),
            Backend::S3(s3) => s3.describe(),
        }
    }

    /// A writer for one new blob. Its bytes go to a temporary file (in the local store, or the
    /// spool of an S3 store) and become visible only through [`BlobWriter::finish`].
    pub async fn writer(&self) -> Result<BlobWriter, BlobError> {
        let spool = Spool::create(self.temp_dir()).await?;
        Ok(BlobWriter {
            spool,
            store: self.clone(),
        })
    }

    /// Whether a blob with this address is stored.
    pub async fn contains(&self, sha256: &str) -> Result<bool, BlobError> {
        check_address(sha256)?;
        match &*self.backend {
            Backend::Local(local) => local.contains(sha256).await,
            Backend::S3(s3) => s3.contains(sha256).await,
        }
    }

    /// The stored blob's length; [`BlobError::NotFound`] when there is none.
    pub async fn size(&self, sha256: &str) -> Result<u64, BlobError> {
        check_address(sha256)?;
        match &*self.backend {
            Backend::Local(local) => local.size(sha256).await,
            Backend::S3(s3) => s3.size(sha256).await,
        }
    }

    /// The blob's bytes as a stream read from disk or the network as the caller reads.
    pub async fn reader(&self, sha256: &str) -> Result<BlobReader, BlobError> {
        check_address(sha256)?;
        match &*self.backend {
            Backend::Local(local) => local.reader(sha256).await,
            Backend::S3(s3) => s3.reader(sha256).await,
        }
    }

    /// Copies the blob to `target`, streamed, through a temporary file beside it that is
    /// renamed over `target` once complete, so `target` is never half written. The bytes are
    /// hashed on the way: a stored blob that no longer matches its address is
    /// [`BlobError::Corrupt`] and `target` is left untouched. Returns the length copied.
    pub async fn copy_to_file(&self, sha256: &str, target: &Path) -> Result<u64, BlobError> {
        let mut reader = self.reader(sha256).await?;
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut name = target
            .file_name()
            .ok_or_else(|| BlobError::Io {
                action: "copy a blob to",
                path: target.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the target names no file",
                ),
            })?
            .to_string_lossy()
            .into_owned();
        // Room for the suffix within a file name's 255 bytes.
        while name.len() > 100 {
            name.pop();
        }
        // A dot file beside the target: same filesystem, so the rename is atomic.
        let mut spool = Spool::create_named(&dir, &format!(".{name}.partial-")).await?;
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut reader, &mut buffer)
                .await
                .map_err(|e| reader.read_error(e))?;
            if n == 0 {
                break;
            }
            spool.write(&buffer[..n]).await?;
        }
        let sealed = spool.seal(true).await?;
        let subject = format!("stored blob {sha256} ({})", reader.location());
        spool::verify(
            &sealed,
            &Expect {
                size: Some(reader.size),
                sha256: Some(sha256.to_owned()),
            },
            &subject,
        )?;
        spool.rename_to(target).await?;
        Ok(sealed.size)
    }

    fn temp_dir(&self) -> &Path {
        match &*self.backend {
            Backend::Local(local) => local.temp_dir(),
            Backend::S3(s3) => s3.spool_dir(),
        }
    }
}

/// One blob being written. Hash and length are computed as bytes arrive; the bytes wait in a
/// temporary file, never in memory. Dropped unfinished, it removes its temporary file and
/// nothing becomes visible.
pub struct BlobWriter {
    spool: Spool,
    store: BlobStore,
}

impl BlobWriter {
    /// Appends `bytes`. After an error the writer is spent: [`BlobWriter::finish`] refuses it,
    /// and the caller should [`BlobWriter::abort`] (or drop) it and start again.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        self.spool.write(bytes).await
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.spool.written()
    }

    /// Checks `expect`, then makes the blob visible under its address, atomically: readers see
    /// all of it or nothing. On a mismatch ([`BlobError::Corrupt`]) nothing is stored. When the
    /// store already holds these bytes, the earlier copy stays and `newly_stored` is `false`.
    pub async fn finish(self, expect: Expect) -> Result<StoredBlob, BlobError> {
        if let Some(sha256) = &expect.sha256 {
            check_address(sha256)?;
        }
        match &*self.store.backend {
            Backend::Local(local) => local.publish(self.spool, &expect).await,
            Backend::S3(s3) => s3.publish(self.spool, &expect).await,
        }
    }

    /// Gives the blob up and removes its temporary file now rather than at drop.
    pub async fn abort(self) -> Result<(), BlobError> {
        self.spool.remove().await
    }
}

/// A stored blob's bytes, streamed. Read errors are `std::io::Error`s whose message names the
/// blob; [`BlobStore::copy_to_file`] turns them back into [`BlobError`]s.
pub struct BlobReader {
    size: u64,
    origin: ReaderOrigin,
    inner: Pin<Box<dyn AsyncRead + Send>>,
}

enum ReaderOrigin {
    Local(PathBuf),
    S3 { endpoint: String, key: String },
}

impl BlobReader {
    /// The blob's length, known before the first byte is read.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file or the `s3://bucket/key` being read.
    pub fn location(&self) -> String {
        match &self.origin {
            ReaderOrigin::Local(path) => path.display().to_string(),
            ReaderOrigin::S3 { key, .. } => key.clone(),
        }
    }

    fn read_error(&self, source: std::io::Error) -> BlobError {
        match &self.origin {
            ReaderOrigin::Local(path) => error::io("read", path, source),
            ReaderOrigin::S3 { endpoint, key } => s3::read_error(endpoint, key, source),
        }
    }
}

impl AsyncRead for BlobReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_read(cx, buf)
    }
}

/// Refuses anything but 64 lower-case hex digits, so that every blob has one spelling and an
/// address can never walk out of the store's directory or prefix.
pub fn check_address(sha256: &str) -> Result<(), BlobError> {
    let valid = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if valid {
        Ok(())
    } else {
        Err(BlobError::InvalidAddress {
            value: sha256.chars().take(80).collect(),
        })
    }
}

/// `sha256/ab/cd/<hex>`: two levels of 256 directories keep each one small enough to list
/// (a million blobs put about 15 in each).
fn relative_key(sha256: &str) -> String {
    format!("sha256/{}/{}/{sha256}", &sha256[0..2], &sha256[2..4])
}

// The worker moves writers and readers across tasks.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<BlobWriter>();
    send::<BlobReader>();
    send::<BlobStore>();
};
