//! The blob store against a real local disk and a real S3-compatible server (moto, installed by
//! `scripts/install-s3-server.sh` when missing): what is stored, what is visible, what is left
//! behind, and which errors say "try again later".

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::Digest;
use tokio::io::AsyncReadExt;
use trawl_shared::blobs::{BlobError, BlobStore, Expect};
use trawl_shared::config::{BlobBackend, BlobStoreConfig, Config};
use trawl_shared::duration::HumanDuration;
use trawl_shared::secret::Secret;
use trawl_shared::testing::s3::{self as s3_server, S3Server};

/// Bytes that repeat nowhere, so that a misplaced chunk changes the hash.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A directory of its own, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "trawl-blobs-{name}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("create a test directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(base, &path, out);
            } else if let Ok(relative) = path.strip_prefix(base) {
                out.push(relative.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// One backend under test, with a way to look at what it holds that does not go through it.
enum Fixture {
    Local {
        dir: TempDir,
    },
    S3 {
        spool: TempDir,
        bucket: String,
        lister: AmazonS3,
    },
}

impl Fixture {
    fn local() -> Fixture {
        Fixture::Local {
            dir: TempDir::new("local"),
        }
    }

    fn s3() -> Fixture {
        let server = s3_server::shared_server();
        let bucket = server.fresh_bucket().expect("create a bucket");
        let lister = AmazonS3Builder::new()
            .with_endpoint(&server.endpoint)
            .with_allow_http(true)
            .with_bucket_name(&bucket)
            .with_region("us-east-1")
            .with_access_key_id(s3_server::ACCESS_KEY_ID)
            .with_secret_access_key(s3_server::SECRET_ACCESS_KEY)
            .build()
            .expect("a client to list the bucket");
        Fixture::S3 {
            spool: TempDir::new("spool"),
            bucket,
            lister,
        }
    }

    fn config(&self) -> BlobStoreConfig {
        match self {
            Fixture::Local { dir } => BlobStoreConfig {
                path: dir.0.clone(),
                ..BlobStoreConfig::default()
            },
            Fixture::S3 { spool, bucket, .. } => BlobStoreConfig {
                prefix: "media/".into(),
                ..s3_server::shared_server().store_config(bucket, spool.0.clone())
            },
        }
    }

    async fn open(&self) -> BlobStore {
        BlobStore::open(&self.config())
            .await
            .expect("open the store")
    }

    /// What is visible: the local store's `sha256/` files, or every key in the bucket.
    async fn visible(&self) -> Vec<String> {
        match self {
            Fixture::Local { dir } => files_under(&dir.0.join("sha256"))
                .into_iter()
                .map(|f| format!("sha256/{f}"))
                .collect(),
            Fixture::S3 { lister, .. } => {
                let mut keys: Vec<String> = lister
                    .list(None)
                    .map_ok(|meta| meta.location.to_string())
                    .try_collect()
                    .await
                    .expect("list the bucket");
                keys.sort();
                keys
            }
        }
    }

    /// Temporary files left: the local store's `tmp/` or the S3 store's spool.
    fn leftovers(&self) -> Vec<String> {
        match self {
            Fixture::Local { dir } => files_under(&dir.0.join("tmp")),
            Fixture::S3 { spool, .. } => files_under(&spool.0.join("tmp")),
        }
    }

    fn expected_key(&self, sha256: &str) -> String {
        let relative = format!("sha256/{}/{}/{sha256}", &sha256[..2], &sha256[2..4]);
        match self {
            Fixture::Local { .. } => relative,
            Fixture::S3 { .. } => format!("media/{relative}"),
        }
    }
}

/// Writes `bytes` in chunks of uneven sizes (1 byte to 64 KiB), as a download arrives.
async fn write_in_chunks(store: &BlobStore, bytes: &[u8]) -> trawl_shared::blobs::BlobWriter {
    let mut writer = store.writer().await.expect("a writer");
    let mut offset = 0;
    let mut step = 1;
    while offset < bytes.len() {
        let end = (offset + step).min(bytes.len());
        writer.write(&bytes[offset..end]).await.expect("write");
        offset = end;
        assert_eq!(writer.written(), offset as u64);
        step = (step * 7 + 3) % (64 * 1024) + 1;
    }
    writer
}

async fn read_all(store: &BlobStore, sha256: &str) -> Vec<u8> {
    let mut reader = store.reader(sha256).await.expect("a reader");
    let mut out = Vec::new();
    // Small reads, so that the stream is consumed in many pieces.
    let mut buffer = vec![0u8; 10_000];
    loop {
        let n = reader.read(&mut buffer).await.expect("read");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buffer[..n]);
    }
    assert_eq!(reader.size(), out.len() as u64);
    out
}

async fn round_trip(fixture: Fixture, len: usize) {
    let store = fixture.open().await;
    let bytes = pattern(len, 1);
    let sha256 = sha256_hex(&bytes);
    assert!(!store.contains(&sha256).await.unwrap());

    let writer = write_in_chunks(&store, &bytes).await;
    let stored = writer
        .finish(Expect {
            size: Some(len as u64),
            sha256: Some(sha256.clone()),
        })
        .await
        .expect("finish");
    assert_eq!(stored.sha256, sha256);
    assert_eq!(stored.size, len as u64);
    assert!(stored.newly_stored);

    assert_eq!(fixture.visible().await, vec![fixture.expected_key(&sha256)]);
    assert!(fixture.leftovers().is_empty(), "{:?}", fixture.leftovers());
    if let Fixture::S3 { lister, .. } = &fixture {
        // S3 gives a multipart object the ETag `"<md5 of the parts' md5s>-<parts>"`: proof of
        // how it was uploaded. Parts are 6 MiB; up to one part is a single PUT.
        let part = 6 * 1024 * 1024;
        let etag = lister
            .head(&fixture.expected_key(&sha256).into())
            .await
            .unwrap()
            .e_tag
            .unwrap_or_default();
        if len > part {
            let parts = len.div_ceil(part);
            assert!(etag.ends_with(&format!("-{parts}\"")), "{etag}");
        } else {
            assert!(!etag.contains('-'), "{etag}");
        }
    }
    assert!(store.contains(&sha256).await.unwrap());
    assert_eq!(store.size(&sha256).await.unwrap(), len as u64);
    assert!(
        read_all(&store, &sha256).await == bytes,
        "read back other bytes"
    );

    let out = TempDir::new("copy");
    let target = out.0.join("video.mp4");
    assert_eq!(
        store.copy_to_file(&sha256, &target).await.unwrap(),
        len as u64
    );
    assert!(
        std::fs::read(&target).unwrap() == bytes,
        "copied other bytes"
    );
    assert_eq!(
        files_under(&out.0),
        vec!["video.mp4"],
        "a partial file was left"
    );
}

#[tokio::test]
async fn local_round_trip_of_a_multi_megabyte_blob_written_in_small_chunks() {
    round_trip(Fixture::local(), 5 * 1024 * 1024 + 321).await;
}

/// 13 MiB and a bit: three multipart parts (6 + 6 + 1 MiB), the last one short.
#[tokio::test]
async fn s3_round_trip_of_a_multipart_blob_written_in_small_chunks() {
    round_trip(Fixture::s3(), 13 * 1024 * 1024 + 777).await;
}

/// Below one part: a single PUT.
#[tokio::test]
async fn s3_round_trip_of_a_small_blob() {
    round_trip(Fixture::s3(), 3 * 1024 * 1024 + 5).await;
}

async fn stored_once(fixture: Fixture) {
    let store = fixture.open().await;
    let bytes = pattern(2 * 1024 * 1024 + 3, 2);
    let first = write_in_chunks(&store, &bytes)
        .await
        .finish(Expect::default())
        .await
        .unwrap();
    assert!(first.newly_stored);
    let before = fixture.visible().await;
    let stamp = |f: &Fixture| match f {
        Fixture::Local { dir } => {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(dir.0.join(f.expected_key(&first.sha256))).unwrap();
            Some(meta.ino())
        }
        Fixture::S3 { .. } => None,
    };
    let inode_before = stamp(&fixture);
    let modified_before = match &fixture {
        Fixture::S3 { lister, .. } => Some(
            lister
                .head(&fixture.expected_key(&first.sha256).into())
                .await
                .unwrap()
                .last_modified,
        ),
        Fixture::Local { .. } => None,
    };
    // Later than the server's one-second timestamps, so that a second upload would show.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let second = write_in_chunks(&store, &bytes)
        .await
        .finish(Expect {
            size: Some(bytes.len() as u64),
            sha256: Some(first.sha256.clone()),
        })
        .await
        .unwrap();
    assert_eq!(second.sha256, first.sha256);
    assert_eq!(second.size, first.size);
    assert!(!second.newly_stored);
    assert_eq!(fixture.visible().await, before, "one object, not two");
    assert_eq!(
        stamp(&fixture),
        inode_before,
        "the earlier file was replaced"
    );
    if let Fixture::S3 { lister, .. } = &fixture {
        let modified = lister
            .head(&fixture.expected_key(&first.sha256).into())
            .await
            .unwrap()
            .last_modified;
        assert_eq!(Some(modified), modified_before, "uploaded again");
    }
    assert!(fixture.leftovers().is_empty(), "{:?}", fixture.leftovers());
}

#[tokio::test]
async fn local_identical_bytes_are_stored_once() {
    stored_once(Fixture::local()).await;
}

#[tokio::test]
async fn s3_identical_bytes_are_stored_once() {
    stored_once(Fixture::s3()).await;
}

/// Two writers finishing the same bytes at once: both succeed, one stores them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_racing_identical_writers_store_once() {
    let fixture = Fixture::local();
    let store = fixture.open().await;
    let bytes = pattern(300_000, 3);
    let a = write_in_chunks(&store, &bytes).await;
    let b = write_in_chunks(&store, &bytes).await;
    let (a, b) = tokio::join!(
        tokio::spawn(a.finish(Expect::default())),
        tokio::spawn(b.finish(Expect::default()))
    );
    let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
    assert_eq!(a.sha256, b.sha256);
    assert!(a.newly_stored ^ b.newly_stored, "{a:?} {b:?}");
    assert_eq!(fixture.visible().await.len(), 1);
    assert!(fixture.leftovers().is_empty());
}

async fn mismatch_stores_nothing(fixture: Fixture) {
    let store = fixture.open().await;
    let bytes = pattern(7 * 1024 * 1024, 4);
    let sha256 = sha256_hex(&bytes);

    let err = write_in_chunks(&store, &bytes)
        .await
        .finish(Expect {
            size: Some(bytes.len() as u64 + 1),
            sha256: Some(sha256.clone()),
        })
        .await
        .unwrap_err();
    match &err {
        BlobError::Corrupt {
            what,
            expected,
            actual,
            ..
        } => {
            assert_eq!(*what, "size");
            assert_eq!(expected, &(bytes.len() + 1).to_string());
            assert_eq!(actual, &bytes.len().to_string());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!err.is_retryable());

    let wrong = sha256_hex(b"other bytes");
    let err = write_in_chunks(&store, &bytes)
        .await
        .finish(Expect {
            size: Some(bytes.len() as u64),
            sha256: Some(wrong.clone()),
        })
        .await
        .unwrap_err();
    match &err {
        BlobError::Corrupt {
            what,
            expected,
            actual,
            ..
        } => {
            assert_eq!(*what, "sha256");
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha256);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(err.to_string().contains(&wrong), "{err}");

    assert!(
        fixture.visible().await.is_empty(),
        "{:?}",
        fixture.visible().await
    );
    assert!(!store.contains(&sha256).await.unwrap());
    assert!(!store.contains(&wrong).await.unwrap());
    assert!(fixture.leftovers().is_empty(), "{:?}", fixture.leftovers());
}

#[tokio::test]
async fn local_a_size_or_hash_mismatch_stores_nothing() {
    mismatch_stores_nothing(Fixture::local()).await;
}

#[tokio::test]
async fn s3_a_size_or_hash_mismatch_stores_nothing() {
    mismatch_stores_nothing(Fixture::s3()).await;
}

async fn unfinished_writers_leave_nothing(fixture: Fixture) {
    let store = fixture.open().await;
    let aborted = write_in_chunks(&store, &pattern(1_000_000, 5)).await;
    assert_eq!(fixture.leftovers().len(), 1, "the writer's temporary file");
    aborted.abort().await.unwrap();
    assert!(fixture.leftovers().is_empty(), "{:?}", fixture.leftovers());

    let dropped = write_in_chunks(&store, &pattern(7 * 1024 * 1024, 6)).await;
    drop(dropped);
    assert!(fixture.leftovers().is_empty(), "{:?}", fixture.leftovers());

    // A writer abandoned in a task that was cancelled mid-write.
    let task_store = store.clone();
    let task = tokio::spawn(async move {
        let mut writer = task_store.writer().await.unwrap();
        loop {
            writer.write(&[7u8; 4096]).await.unwrap();
            tokio::task::yield_now().await;
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    task.abort();
    let _ = task.await;

    assert!(
        fixture.visible().await.is_empty(),
        "{:?}",
        fixture.visible().await
    );
    assert!(fixture.leftovers().is_empty(), "{:?}", fixture.leftovers());
}

#[tokio::test]
async fn local_aborted_and_dropped_writers_leave_nothing() {
    unfinished_writers_leave_nothing(Fixture::local()).await;
}

#[tokio::test]
async fn s3_aborted_and_dropped_writers_leave_nothing() {
    unfinished_writers_leave_nothing(Fixture::s3()).await;
}

async fn missing_and_malformed_addresses(fixture: Fixture) {
    let store = fixture.open().await;
    let absent = sha256_hex(b"never stored");
    assert!(!store.contains(&absent).await.unwrap());
    assert!(matches!(
        store.size(&absent).await,
        Err(BlobError::NotFound { .. })
    ));
    match store.reader(&absent).await {
        Err(BlobError::NotFound { sha256, .. }) => assert_eq!(sha256, absent),
        Err(other) => panic!("expected NotFound, got {other:?}"),
        Ok(_) => panic!("a reader for a blob never stored"),
    }
    let out = TempDir::new("copy-missing");
    let target = out.0.join("x");
    assert!(matches!(
        store.copy_to_file(&absent, &target).await,
        Err(BlobError::NotFound { .. })
    ));
    assert!(files_under(&out.0).is_empty());

    for bad in [
        absent.to_uppercase(),
        "../../etc/passwd".to_owned(),
        absent[..63].to_owned(),
    ] {
        assert!(matches!(
            store.contains(&bad).await,
            Err(BlobError::InvalidAddress { .. })
        ));
        let err = store
            .writer()
            .await
            .unwrap()
            .finish(Expect {
                size: None,
                sha256: Some(bad.clone()),
            })
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::InvalidAddress { .. }), "{err:?}");
    }
    assert!(fixture.visible().await.is_empty());
    assert!(fixture.leftovers().is_empty());
}

#[tokio::test]
async fn local_missing_and_malformed_addresses() {
    missing_and_malformed_addresses(Fixture::local()).await;
}

#[tokio::test]
async fn s3_missing_and_malformed_addresses() {
    missing_and_malformed_addresses(Fixture::s3()).await;
}

/// A stored file altered behind the store's back is refused by `copy_to_file`, and the target
/// is not touched.
#[tokio::test]
async fn local_copy_refuses_a_blob_that_no_longer_matches_its_address() {
    let fixture = Fixture::local();
    let store = fixture.open().await;
    let stored = write_in_chunks(&store, &pattern(100_000, 7))
        .await
        .finish(Expect::default())
        .await
        .unwrap();
    let Fixture::Local { dir } = &fixture else {
        unreachable!()
    };
    std::fs::write(
        dir.0.join(fixture.expected_key(&stored.sha256)),
        vec![0u8; 100_000],
    )
    .unwrap();
    let out = TempDir::new("copy-corrupt");
    let target = out.0.join("picture.jpg");
    std::fs::write(&target, b"the previous picture").unwrap();
    let err = store
        .copy_to_file(&stored.sha256, &target)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BlobError::Corrupt { what: "sha256", .. }),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"the previous picture");
    assert_eq!(files_under(&out.0), vec!["picture.jpg"]);
}

/// Temporary files that a killed process left more than an hour ago are removed when a store
/// opens; younger ones (another process may be writing them) are kept.
#[tokio::test]
async fn local_stale_temporary_files_are_swept_at_open() {
    let fixture = Fixture::local();
    drop(fixture.open().await);
    let Fixture::Local { dir } = &fixture else {
        unreachable!()
    };
    let tmp = dir.0.join("tmp");
    std::fs::write(tmp.join("blob-stale"), b"left by a crash").unwrap();
    std::fs::write(tmp.join("blob-fresh"), b"being written").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(tmp.join("blob-stale"))
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    drop(fixture.open().await);
    assert_eq!(fixture.leftovers(), vec!["blob-fresh"]);
}

/// A full disk (a 1 MiB tmpfs) is `NoSpace`, retryable, and leaves nothing visible.
#[tokio::test]
async fn local_a_full_disk_is_no_space_and_retryable() {
    let dir = TempDir::new("full");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&dir.0)
        .output();
    if !matches!(&mounted, Ok(out) if out.status.success()) {
        // Mounting needs root, which CI has; a developer's unprivileged run skips this.
        eprintln!("skipped: cannot mount a tmpfs here ({mounted:?})");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&dir.0);

    let store = BlobStore::open(&BlobStoreConfig {
        path: dir.0.clone(),
        ..BlobStoreConfig::default()
    })
    .await
    .unwrap();
    let mut writer = store.writer().await.unwrap();
    let chunk = pattern(64 * 1024, 8);
    let mut result = Ok(());
    for _ in 0..64 {
        result = writer.write(&chunk).await;
        if result.is_err() {
            break;
        }
    }
    let err = match result {
        // The last bytes may still sit in the writer's buffer: finishing flushes them.
        Ok(()) => writer.finish(Expect::default()).await.unwrap_err(),
        Err(e) => {
            drop(writer);
            e
        }
    };
    assert!(matches!(err, BlobError::NoSpace { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(
        err.to_string().contains(&dir.0.display().to_string()),
        "{err}"
    );
    assert!(files_under(&dir.0.join("sha256")).is_empty());
    assert!(
        files_under(&dir.0.join("tmp")).is_empty(),
        "{:?}",
        files_under(&dir.0.join("tmp"))
    );
}

/// A closed port: `Unreachable`, retryable, on reads and on writes, naming the endpoint and never
/// the secret.
#[tokio::test]
async fn s3_an_unreachable_endpoint_is_retryable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spool = TempDir::new("unreachable");
    let config = BlobStoreConfig {
        backend: BlobBackend::S3,
        path: spool.0.clone(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        bucket: Some("media".into()),
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some(Secret::new("very-secret-value")),
        path_style: true,
        connect_timeout: HumanDuration::from_millis(500),
        max_retries: 0,
        ..BlobStoreConfig::default()
    };
    let store = BlobStore::open(&config)
        .await
        .expect("opening asks nothing of the server");
    let sha256 = sha256_hex(b"x");

    let err = store.contains(&sha256).await.unwrap_err();
    assert!(matches!(err, BlobError::Unreachable { .. }), "{err:?}");
    assert!(err.is_retryable());

    let mut writer = store.writer().await.unwrap();
    writer.write(b"some bytes").await.unwrap();
    let err = writer.finish(Expect::default()).await.unwrap_err();
    assert!(matches!(err, BlobError::Unreachable { .. }), "{err:?}");
    assert!(err.is_retryable());
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(!message.contains("very-secret-value"), "{message}");
    let shown = format!("{store:?} {config:?}");
    assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
    assert!(!shown.contains("very-secret-value"), "{shown}");
    assert!(
        files_under(&spool.0.join("tmp")).is_empty(),
        "the spool file was left"
    );
}

/// Credentials the server does not know: `Denied`, permanent, naming the settings to check.
#[tokio::test]
async fn s3_refused_credentials_are_permanent() {
    let server = S3Server::start_with_auth().expect("start a server that checks credentials");
    let spool = TempDir::new("denied");
    let store = BlobStore::open(&server.store_config("media", spool.0.clone()))
        .await
        .unwrap();
    let mut writer = store.writer().await.unwrap();
    writer.write(b"some bytes").await.unwrap();
    let err = writer.finish(Expect::default()).await.unwrap_err();
    assert!(matches!(err, BlobError::Denied { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let message = err.to_string();
    assert!(
        message.contains("media.store.secret_access_key"),
        "{message}"
    );
    assert!(!message.contains(s3_server::SECRET_ACCESS_KEY), "{message}");

    let err = store.contains(&sha256_hex(b"x")).await.unwrap_err();
    assert!(matches!(err, BlobError::Denied { .. }), "{err:?}");
}

/// A bucket that does not exist is a permanent refusal, not a retry loop.
#[tokio::test]
async fn s3_a_missing_bucket_is_permanent() {
    let server = s3_server::shared_server();
    let spool = TempDir::new("nobucket");
    let store = BlobStore::open(&server.store_config("no-such-bucket", spool.0.clone()))
        .await
        .unwrap();
    let mut writer = store.writer().await.unwrap();
    writer.write(b"some bytes").await.unwrap();
    let err = writer.finish(Expect::default()).await.unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("no-such-bucket"), "{err}");
}

/// A broken `[media.store]` names the field, from a file and from `BlobStore::open`.
#[tokio::test]
async fn a_bad_config_names_the_field() {
    for (toml, key) in [
        ("[media.store]\nbackend = \"gcs\"\n", "media.store.backend"),
        ("[media.store]\nbackend = \"s3\"\n", "media.store.bucket"),
        (
            "[media.store]\nbackend = \"s3\"\nbucket = \"Media_Bucket\"\n",
            "media.store.bucket",
        ),
        (
            "[media.store]\nbackend = \"s3\"\nbucket = \"media\"\nendpoint = \"minio:9000\"\n",
            "media.store.endpoint",
        ),
        (
            "[media.store]\nbackend = \"s3\"\nbucket = \"media\"\naccess_key_id = \"AKID\"\n",
            "media.store.secret_access_key",
        ),
        (
            "[media.store]\nbackend = \"s3\"\nbucket = \"media\"\nprefix = \"/media\"\n",
            "media.store.prefix",
        ),
        ("[media.store]\nbuckett = \"media\"\n", "buckett"),
    ] {
        let err = Config::from_toml_str(toml).unwrap_err().to_string();
        assert!(err.contains(key), "{toml:?} gave {err}");
    }

    let spool = TempDir::new("badconfig");
    let err = BlobStore::open(&BlobStoreConfig {
        backend: BlobBackend::S3,
        path: spool.0.clone(),
        bucket: None,
        ..BlobStoreConfig::default()
    })
    .await
    .expect_err("an S3 store without a bucket");
    assert!(
        matches!(
            err,
            BlobError::Config {
                key: "media.store.bucket",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

/// The defaults are a local store under `data/media`, and the S3 secret never prints.
#[test]
fn the_defaults_and_the_secret() {
    let config = Config::default();
    assert_eq!(config.media.store.backend, BlobBackend::Local);
    assert_eq!(config.media.store.path, PathBuf::from("data/media"));

    let config = Config::from_toml_str(
        "[media.store]\nbackend = \"s3\"\nbucket = \"media\"\naccess_key_id = \"AKID\"\nsecret_access_key = \"s3-secret-123\"\n",
    )
    .unwrap();
    assert_eq!(
        config
            .media
            .store
            .secret_access_key
            .as_ref()
            .map(Secret::expose),
        Some("s3-secret-123")
    );
    assert!(!format!("{config:?}").contains("s3-secret-123"));
    assert!(!config.to_redacted_toml().contains("s3-secret-123"));
}
