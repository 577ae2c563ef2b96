//! Why a blob operation failed, and whether trying again later can help.

use std::path::PathBuf;

/// Every message names the problem and the path, key or setting it concerns; none carries a
/// credential.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The store's configuration is unusable; `key` is the setting as written in `trawl.toml`.
    #[error("invalid value for {key}: {message}")]
    Config { key: &'static str, message: String },

    /// A blob address (or an expected hash) that is not 64 lower-case hex digits.
    #[error("{value:?} is not a blob address (64 lower-case hex digits of a SHA-256)")]
    InvalidAddress { value: String },

    /// No blob is stored under this address.
    #[error("blob {sha256} is not in the store (looked for {location})")]
    NotFound { sha256: String, location: String },

    /// The bytes do not match what was expected of them. From a writer: the expectation and the
    /// bytes written differ, and nothing was stored (downloading again may help, storing the
    /// same bytes again will not). From a copy: the stored blob no longer matches its address.
    #[error("{subject}: expected {what} {expected}, got {actual}")]
    Corrupt {
        subject: String,
        what: &'static str,
        expected: String,
        actual: String,
    },

    /// The disk holding `path` is full (or its quota is used up). Retryable once space is
    /// freed; nothing was made visible.
    #[error("no space left on the device holding {path}")]
    NoSpace { path: PathBuf },

    /// Any other local file-system failure.
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An earlier [`super::BlobWriter::write`] failed, so the temporary file's contents are
    /// unknown and the writer cannot finish.
    #[error("cannot finish the blob being written to {path}: an earlier write failed")]
    WriterFailed { path: PathBuf },

    /// The S3 server could not be reached, or did not answer in time, after the configured
    /// retries. Retryable.
    #[error("cannot reach the object store at {endpoint} while {action} {key}: {message}")]
    Unreachable {
        endpoint: String,
        action: &'static str,
        key: String,
        message: String,
    },

    /// The S3 server refused the credentials or their permissions (401, 403). Permanent until
    /// the configuration changes.
    #[error(
        "the object store at {endpoint} refused access while {action} {key} (check media.store.access_key_id, media.store.secret_access_key and the bucket's policy): {message}"
    )]
    Denied {
        endpoint: String,
        action: &'static str,
        key: String,
        message: String,
    },

    /// Any other answer from the S3 server: `retryable` for 5xx and throttling (after the
    /// configured retries), not for other refusals (a missing bucket, a bad request).
    #[error("the object store at {endpoint} failed while {action} {key}: {message}")]
    Remote {
        endpoint: String,
        action: &'static str,
        key: String,
        message: String,
        retryable: bool,
    },
}

impl BlobError {
    /// Whether the same operation may succeed later without anything being changed: a full
    /// disk that gets space, a server that comes back, a throttled request.
    pub fn is_retryable(&self) -> bool {
        match self {
            BlobError::NoSpace { .. } | BlobError::Unreachable { .. } => true,
            BlobError::Remote { retryable, .. } => *retryable,
            BlobError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
            ),
            BlobError::Config { .. }
            | BlobError::InvalidAddress { .. }
            | BlobError::NotFound { .. }
            | BlobError::Corrupt { .. }
            | BlobError::WriterFailed { .. }
            | BlobError::Denied { .. } => false,
        }
    }
}

/// A local I/O error, with a full disk told apart: callers back off and retry on that one,
/// while most others need a person.
pub(crate) fn io(
    action: &'static str,
    path: impl Into<PathBuf>,
    source: std::io::Error,
) -> BlobError {
    let path = path.into();
    if is_no_space(&source) {
        BlobError::NoSpace { path }
    } else {
        BlobError::Io {
            action,
            path,
            source,
        }
    }
}

fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's own ENOSPC (from /dev/full, which refuses every write with it) becomes
    /// `NoSpace`, retryable, whatever wraps it.
    #[tokio::test]
    async fn a_full_device_is_no_space_and_retryable() {
        use tokio::io::AsyncWriteExt;
        let mut full = tokio::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .await
            .expect("open /dev/full");
        let err = async {
            full.write_all(b"x").await?;
            full.flush().await
        }
        .await
        .expect_err("/dev/full accepts nothing");
        let err = io("write", "/dev/full", err);
        assert!(matches!(err, BlobError::NoSpace { .. }), "{err:?}");
        assert!(err.is_retryable());
        assert_eq!(
            err.to_string(),
            "no space left on the device holding /dev/full"
        );
    }

    #[test]
    fn other_io_errors_are_not_no_space() {
        let err = io(
            "open",
            "/nowhere",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert!(matches!(err, BlobError::Io { .. }), "{err:?}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("/nowhere"), "{err}");
    }
}
