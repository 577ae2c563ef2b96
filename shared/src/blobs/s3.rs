//! The S3 backend: `{prefix}sha256/ab/cd/<hex>` in one bucket, through `object_store`.
//!
//! A blob's address is known only after its last byte, so its bytes are spooled to a local
//! temporary file first (hashed as they arrive), checked, and only then uploaded, straight to
//! their address (ADR 0011). S3 makes a single PUT or a completed multipart upload visible
//! whole or not at all, so nothing incomplete is ever visible under an address, and nothing
//! temporary is ever written to the bucket. A blob already there is not uploaded again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::AsyncReadExt;

use super::error::{self, BlobError};
use super::spool::{self, Spool};
use super::{BlobReader, Expect, ReaderOrigin, STALE_TEMP_AGE, StoredBlob, relative_key};
use crate::config::BlobStoreConfig;

/// Multipart part size. S3 wants at least 5 MiB per part but the last; with one part in flight
/// while the next is read from the spool, an upload holds at most two parts: 12 MiB. 10,000
/// parts (S3's limit) allow blobs up to 60 GiB.
const PART_SIZE: usize = 6 * 1024 * 1024;
/// Parts uploading while the next one is read. One keeps an upload within 12 MiB of buffers;
/// a worker downloads media one at a time per account anyway.
const PARTS_IN_FLIGHT: usize = 1;

pub(crate) struct S3Store {
    client: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
    /// Where the server is, for messages (never with credentials).
    endpoint: String,
    spool_dir: PathBuf,
}

impl S3Store {
    pub async fn open(config: &BlobStoreConfig) -> Result<S3Store, BlobError> {
        let bucket = config.bucket.clone().unwrap_or_default();
        let prefix = config.prefix.clone();
        if ObjectPath::parse(format!("{prefix}{}", relative_key(&"0".repeat(64)))).is_err() {
            return Err(BlobError::Config {
                key: "media.store.prefix",
                message: format!("{prefix:?} cannot start an S3 key"),
            });
        }
        let endpoint = config
            .endpoint
            .as_deref()
            .map(|e| e.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", config.region));

        let mut builder = match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => AmazonS3Builder::new()
                .with_access_key_id(id)
                .with_secret_access_key(secret.expose()),
            // AWS's own variables, instance profiles and web identity: what a fleet on AWS uses.
            _ => AmazonS3Builder::from_env(),
        };
        let client_options = ClientOptions::new()
            .with_allow_http(endpoint.starts_with("http://"))
            .with_connect_timeout(config.connect_timeout.0)
            .with_timeout(config.request_timeout.0);
        builder = builder
            .with_bucket_name(&bucket)
            .with_region(&config.region)
            .with_client_options(client_options)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: config.max_retries as usize,
                ..RetryConfig::default()
            })
            .with_virtual_hosted_style_request(!config.path_style);
        if config.endpoint.is_some() {
            let request_endpoint = if config.path_style {
                endpoint.clone()
            } else {
                // object_store expects the bucket already in a virtual-hosted endpoint's host.
                virtual_hosted(&endpoint, &bucket)
            };
            builder = builder.with_endpoint(request_endpoint);
        }
        let client = builder.build().map_err(|e| BlobError::Config {
            key: "media.store",
            message: e.to_string(),
        })?;

        let spool_dir = config.path.join("tmp");
        tokio::fs::create_dir_all(&spool_dir)
            .await
            .map_err(|e| error::io("create the directory", &spool_dir, e))?;
        let removed = spool::sweep_stale(&spool_dir, STALE_TEMP_AGE).await;
        if removed > 0 {
            tracing::info!(removed, dir = %spool_dir.display(), "removed stale upload spool files");
        }
        Ok(S3Store {
            client: Arc::new(client),
            bucket,
            prefix,
            endpoint,
            spool_dir,
        })
    }

    pub fn describe(&self) -> String {
        format!("s3://{}/{} at {}", self.bucket, self.prefix, self.endpoint)
    }

    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    fn key(&self, sha256: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{}", self.prefix, relative_key(sha256)))
    }

    fn shown(&self, key: &ObjectPath) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    pub async fn contains(&self, sha256: &str) -> Result<bool, BlobError> {
        let key = self.key(sha256);
        match self.client.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.classify(e, "looking for", &key)),
        }
    }

    pub async fn size(&self, sha256: &str) -> Result<u64, BlobError> {
        let key = self.key(sha256);
        match self.client.head(&key).await {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => Err(self.not_found(sha256, &key)),
            Err(e) => Err(self.classify(e, "looking for", &key)),
        }
    }

    pub async fn reader(&self, sha256: &str) -> Result<BlobReader, BlobError> {
        let key = self.key(sha256);
        let result = match self.client.get(&key).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Err(self.not_found(sha256, &key)),
            Err(e) => return Err(self.classify(e, "reading", &key)),
        };
        let size = result.meta.size;
        // The object_store error rides inside the io::Error, so that `read_error` can still
        // tell a lost connection from a refusal.
        let stream = result.into_stream().map_err(std::io::Error::other);
        Ok(BlobReader {
            size,
            origin: ReaderOrigin::S3 {
                endpoint: self.endpoint.clone(),
                key: self.shown(&key),
            },
            inner: Box::pin(tokio_util::io::StreamReader::new(stream)),
        })
    }

    fn not_found(&self, sha256: &str, key: &ObjectPath) -> BlobError {
        BlobError::NotFound {
            sha256: sha256.to_owned(),
            location: self.shown(key),
        }
    }

    pub async fn publish(
        &self,
        mut spool: Spool,
        expect: &Expect,
    ) -> Result<StoredBlob, BlobError> {
        let sealed = spool.seal(false).await?;
        // On a mismatch the spool is dropped here, which removes it: nothing was uploaded.
        spool::verify(
            &sealed,
            expect,
            &format!("blob spooled in {}", spool.path().display()),
        )?;
        let key = self.key(&sealed.sha256);
        let newly_stored = match self.client.head(&key).await {
            Ok(meta) if meta.size == sealed.size => false,
            Ok(meta) => {
                // Only something other than this store could have put it there: replace it with
                // bytes that match the address.
                tracing::warn!(
                    key = %self.shown(&key),
                    stored = meta.size,
                    expected = sealed.size,
                    "an object under a blob address has the wrong size; replacing it"
                );
                true
            }
            Err(object_store::Error::NotFound { .. }) => true,
            Err(e) => return Err(self.classify(e, "looking for", &key)),
        };
        if newly_stored {
            self.upload(spool.path(), &key, sealed.size).await?;
        }
        if let Err(e) = spool.remove().await {
            // The blob is stored; a leftover spool file is the sweep's to remove.
            tracing::warn!(error = %e, "cannot remove an upload spool file");
        }
        Ok(StoredBlob {
            sha256: sealed.sha256,
            size: sealed.size,
            newly_stored,
        })
    }

    async fn upload(&self, file: &Path, key: &ObjectPath, size: u64) -> Result<(), BlobError> {
        if size <= PART_SIZE as u64 {
            let bytes = tokio::fs::read(file)
                .await
                .map_err(|e| error::io("read", file, e))?;
            self.client
                .put(key, PutPayload::from(bytes))
                .await
                .map_err(|e| self.classify(e, "uploading", key))?;
            return Ok(());
        }
        let upload = self
            .client
            .put_multipart(key)
            .await
            .map_err(|e| self.classify(e, "starting the upload of", key))?;
        let mut parts = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        if let Err(e) = self.send_parts(&mut parts, file, key).await {
            // Uploaded parts are invisible but billed until aborted; a bucket lifecycle rule
            // catches what a crash leaves (docs/media.md).
            if let Err(abort) = parts.abort().await {
                tracing::warn!(key = %self.shown(key), error = %abort, "cannot abort a multipart upload");
            }
            return Err(e);
        }
        parts
            .finish()
            .await
            .map_err(|e| self.classify(e, "completing the upload of", key))?;
        Ok(())
    }

    async fn send_parts(
        &self,
        parts: &mut WriteMultipart,
        spool_path: &Path,
        key: &ObjectPath,
    ) -> Result<(), BlobError> {
        let mut file = tokio::fs::File::open(spool_path)
            .await
            .map_err(|e| error::io("open", spool_path, e))?;
        loop {
            let part = read_part(&mut file)
                .await
                .map_err(|e| error::io("read", spool_path, e))?;
            if part.is_empty() {
                return Ok(());
            }
            parts
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|e| self.classify(e, "uploading", key))?;
            parts.put(part);
        }
    }

    /// Turns an `object_store` error into ours, telling a server that cannot be reached (and
    /// may come back) from one that refuses (and will go on refusing).
    fn classify(
        &self,
        e: object_store::Error,
        action: &'static str,
        key: &ObjectPath,
    ) -> BlobError {
        classify(e, &self.endpoint, action, self.shown(key))
    }
}

fn classify(
    e: object_store::Error,
    endpoint: &str,
    action: &'static str,
    key: String,
) -> BlobError {
    let endpoint = endpoint.to_owned();
    let message = one_line(&e.to_string());
    if matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) {
        return BlobError::Denied {
            endpoint,
            action,
            key,
            message,
        };
    }
    if let object_store::Error::NotFound { .. } = e {
        // Where an object was expected to be missing the callers handle it; here it is the
        // bucket (or the multipart upload) that is missing.
        return BlobError::Remote {
            endpoint,
            action,
            key,
            message: format!("not found (does the bucket exist?): {message}"),
            retryable: false,
        };
    }
    if let Some(kind) = transport_failure(&e) {
        return match kind {
            HttpErrorKind::Connect
            | HttpErrorKind::Request
            | HttpErrorKind::Timeout
            | HttpErrorKind::Interrupted => BlobError::Unreachable {
                endpoint,
                action,
                key,
                message,
            },
            // A garbled or cut answer: the next try may get a whole one.
            HttpErrorKind::Decode => BlobError::Remote {
                endpoint,
                action,
                key,
                message,
                retryable: true,
            },
            _ => BlobError::Remote {
                endpoint,
                action,
                key,
                message,
                retryable: false,
            },
        };
    }
    match http_status(&message) {
        Some(401 | 403) => BlobError::Denied {
            endpoint,
            action,
            key,
            message,
        },
        status => BlobError::Remote {
            endpoint,
            action,
            key,
            message,
            retryable: matches!(status, Some(429) | Some(500..=599)),
        },
    }
}

/// An I/O error from reading a blob's stream, made one of ours again.
pub(crate) fn read_error(endpoint: &str, key: &str, source: std::io::Error) -> BlobError {
    let shown = key.to_owned();
    match source.into_inner() {
        Some(inner) => match inner.downcast::<object_store::Error>() {
            Ok(e) => classify(*e, endpoint, "reading", shown),
            Err(other) => BlobError::Unreachable {
                endpoint: endpoint.to_owned(),
                action: "reading",
                key: shown,
                message: other.to_string(),
            },
        },
        None => BlobError::Unreachable {
            endpoint: endpoint.to_owned(),
            action: "reading",
            key: shown,
            message: "the stream ended with an error".into(),
        },
    }
}

/// The server's XML error body arrives inside the message: kept (its `<Code>` says what went
/// wrong) but on one line and cut short, so that a log line stays a line.
fn one_line(message: &str) -> String {
    const LONGEST: usize = 600;
    let mut line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > LONGEST {
        let mut end = LONGEST;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

/// The transport failure at the bottom of an `object_store` error, if that is what it is.
fn transport_failure(e: &object_store::Error) -> Option<HttpErrorKind> {
    let mut current: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(http) = current.downcast_ref::<HttpError>() {
            return Some(http.kind());
        }
        current = current.source()?;
    }
}

/// The HTTP status in an `object_store` message ("... status code: 503 Service Unavailable
/// ..."). `object_store` keeps the error that holds it private, and sorts only 401, 403, 404,
/// 409 and 412 into variants; the text is what is left to tell a 5xx from another 4xx.
fn http_status(message: &str) -> Option<u16> {
    let at = message.find("status code: ")? + "status code: ".len();
    message.get(at..at + 3)?.parse().ok()
}

/// Reads up to one part from `file`: exactly `PART_SIZE` bytes unless the file ends first.
async fn read_part(file: &mut tokio::fs::File) -> std::io::Result<Bytes> {
    let mut part = BytesMut::with_capacity(PART_SIZE);
    while part.len() < PART_SIZE {
        if file.read_buf(&mut part).await? == 0 {
            break;
        }
    }
    Ok(part.freeze())
}

/// `http://host:port` with `bucket.` put before the host.
fn virtual_hosted(endpoint: &str, bucket: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, host)) => format!("{scheme}://{bucket}.{host}"),
        None => format!("{bucket}.{endpoint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_read_from_the_message() {
        assert_eq!(
            http_status(
                "Error performing PUT http://h/b/k in 2ms - Server returned non-2xx status code: 503 Service Unavailable: "
            ),
            Some(503)
        );
        assert_eq!(http_status("HTTP error: error sending request"), None);
    }

    #[test]
    fn the_bucket_goes_before_the_host() {
        assert_eq!(
            virtual_hosted("https://s3.example.net:9000", "media"),
            "https://media.s3.example.net:9000"
        );
    }
}
