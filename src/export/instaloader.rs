//! `trawl export instaloader --output DIR [--target USERNAME]...`: the directory tree Instaloader
//! 4.16's command line writes (`instaloader --login … --comments --stories --highlights
//! PROFILE…`), from what Trawl crawled: pictures and videos copied from the blob store, the
//! `.json.xz` metadata and `_comments.json` built as Instaloader builds them, captions, `id`
//! files and file times as Instaloader sets them. docs/instaloader-tree.md is the reference,
//! docs/media.md says how to use the result.
//!
//! Writing follows Instaloader's download rules, so a name two items share is resolved as
//! Instaloader resolves it, and exporting into a tree Instaloader (or an earlier export) wrote
//! behaves like Instaloader run again over it: a picture or video that is there is kept, a
//! changed caption moves the old one aside (`_old_01.txt`), comments are merged into the file,
//! `.json.xz` files are rewritten.
//!
//! The node builders are I/O-free (`nodes`, `names`, `pyjson`); this module reads PostgreSQL one
//! item at a time and writes files.

mod names;
mod nodes;
mod pyjson;

use std::collections::BTreeMap;
use std::fs::{self, File, FileTimes};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;
use sqlx::PgPool;
use trawl_shared::blobs::{BlobError, BlobStore};
use trawl_shared::config::Config;
use trawl_shared::db;
use trawl_shared::domain::MediaTarget;
use trawl_shared::results::{
    self, ArchivedComment, ArchivedPost, ArchivedProfile, ArchivedStoryItem, MediaRow,
    MediaVariant, ResultsError,
};

use crate::client::CliError;
use names::{content_type_extension, sanitize, system_time, url_extension, utc_stamp};
use nodes::{Object, PostSources, StoredComment};

/// Why an export cannot go on: the caller stops and reports it.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("cannot open the blob store ([media.store]): {0}")]
    Store(BlobError),
    #[error(
        "no profile named {0:?} is stored: crawl it first (profile_posts, stories and highlights with media)"
    )]
    NoSuchProfile(String),
    #[error("nothing to export: no stored profile owns posts or story items")]
    NothingStored,
    #[error(
        "{} holds the id of profile {found}, not {expected} ({username}): Instaloader would look \
         the profile up by that id and rename the directory; export into another directory",
        path.display()
    )]
    IdMismatch {
        path: PathBuf,
        username: String,
        found: String,
        expected: i64,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// Why one item (a post, a story item, a picture) could not be written whole. The export reports
/// it and goes on with the next item, as Instaloader goes on after a failed download; the item is
/// left as Instaloader leaves it (nothing after the failing file).
#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    #[error("{item}: no {file} is recorded in ig_media: crawl it with media (with_media)")]
    NoMedia { item: String, file: String },
    #[error("{item}: its {file} was never downloaded (its media job did not finish)")]
    NotDownloaded { item: String, file: String },
    #[error("{item}: its {file} is missing from the blob store: {source}")]
    MissingBlob {
        item: String,
        file: String,
        source: Box<BlobError>,
    },
    #[error("{item}: cannot copy its {file} from the blob store: {source}")]
    Blob {
        item: String,
        file: String,
        source: Box<BlobError>,
    },
    #[error("{item}: has no time to name its files by")]
    NoTime { item: String },
    #[error(transparent)]
    Export(#[from] ExportError),
}

impl From<ExportError> for CliError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::NoSuchProfile(_) | ExportError::NothingStored => {
                CliError::NotFound(e.to_string())
            }
            ExportError::IdMismatch { .. } => CliError::Conflict(e.to_string()),
            other => CliError::failed("cannot export", other),
        }
    }
}

/// What one export wrote and skipped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub profiles: u64,
    pub posts: u64,
    pub story_items: u64,
    pub highlights: u64,
    /// Files written (pictures, videos, JSON, captions, comments, `id`).
    pub files: u64,
    pub failures: Vec<String>,
}

/// `trawl export instaloader`: reads the configuration's database and blob store.
pub async fn run(config: &Config, output: &Path, targets: &[String]) -> Result<(), CliError> {
    let pool = db::connect(&config.database).await?;
    let result = async {
        db::check_schema(&pool).await.map_err(CliError::Schema)?;
        let store = BlobStore::open(&config.media.store)
            .await
            .map_err(ExportError::Store)?;
        Ok::<_, CliError>(export(&pool, &store, output, targets).await?)
    }
    .await;
    pool.close().await;
    let summary = result?;
    eprintln!(
        "exported {} ({}, {}, {}; {} written) to {}",
        counted(summary.profiles, "profile"),
        counted(summary.posts, "post"),
        counted(summary.story_items, "story item"),
        counted(summary.highlights, "highlight"),
        counted(summary.files, "file"),
        output.display()
    );
    if summary.failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(
            "the export is incomplete",
            format!(
                "{} item(s) could not be exported whole (listed above; the first: {})",
                summary.failures.len(),
                summary.failures[0]
            ),
        ))
    }
}

/// "1 post", "2 posts".
fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Writes the tree of `targets` (every stored profile with posts or story items when empty)
/// under `output`. Item failures are printed as they happen and counted in the summary.
pub async fn export(
    pool: &PgPool,
    store: &BlobStore,
    output: &Path,
    targets: &[String],
) -> Result<Summary, ExportError> {
    let profiles = results::archived_profiles(pool, targets).await?;
    for target in targets {
        if !profiles
            .iter()
            .any(|p| p.username.eq_ignore_ascii_case(target))
        {
            return Err(ExportError::NoSuchProfile(target.clone()));
        }
    }
    if profiles.is_empty() {
        return Err(ExportError::NothingStored);
    }
    create_dir(output)?;
    let mut tree = Tree {
        pool,
        store,
        root: output.to_path_buf(),
        summary: Summary::default(),
    };
    for profile in &profiles {
        tree.profile(profile).await?;
    }
    Ok(tree.summary)
}

fn create_dir(path: &Path) -> Result<(), ExportError> {
    fs::create_dir_all(path).map_err(|source| ExportError::Io {
        action: "create the directory",
        path: path.to_path_buf(),
        source,
    })
}

fn io_error<'p>(
    action: &'static str,
    path: &'p Path,
) -> impl FnOnce(io::Error) -> ExportError + 'p {
    move |source| ExportError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// `os.path.isfile`.
fn is_file(path: &Path) -> bool {
    path.is_file()
}

/// A base path (`dir/2025-12-31_23-55-41_UTC`) with more appended to its file name.
fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `os.utime(path, (now, t))`.
fn set_mtime(path: &Path, t: SystemTime) -> Result<(), ExportError> {
    let file = File::options()
        .write(true)
        .open(path)
        .map_err(io_error("open to date", path))?;
    file.set_times(
        FileTimes::new()
            .set_accessed(SystemTime::now())
            .set_modified(t),
    )
    .map_err(io_error("set the time of", path))
}

/// One export under way.
struct Tree<'a> {
    pool: &'a PgPool,
    store: &'a BlobStore,
    root: PathBuf,
    summary: Summary,
}

/// An item's stored files by (position, variant).
struct Files {
    item: String,
    rows: BTreeMap<(i32, MediaVariant), MediaRow>,
}

impl Files {
    fn get(&self, position: i32, variant: MediaVariant) -> Result<&MediaRow, ItemError> {
        self.rows
            .get(&(position, variant))
            .ok_or_else(|| ItemError::NoMedia {
                item: self.item.clone(),
                file: describe(position, variant),
            })
    }
}

fn describe(position: i32, variant: MediaVariant) -> String {
    match position {
        0 => variant.as_str().to_owned(),
        k => format!("{} {k}", variant.as_str()),
    }
}

impl Tree<'_> {
    fn fail(&mut self, error: &ItemError) {
        eprintln!("error: {error}");
        self.summary.failures.push(error.to_string());
    }

    async fn files(&self, item: &str) -> Result<Files, ExportError> {
        let rows = results::media_files(self.pool, &[item.to_owned()]).await?;
        Ok(Files {
            item: item.to_owned(),
            rows: rows
                .into_iter()
                .map(|r| ((r.file.position, r.file.variant), r))
                .collect(),
        })
    }

    /// Copies a stored file to `path`, dated `mtime` when given.
    async fn copy(
        &mut self,
        item: &str,
        row: &MediaRow,
        path: &Path,
        mtime: Option<SystemTime>,
    ) -> Result<(), ItemError> {
        let file = describe(row.file.position, row.file.variant);
        let Some((sha256, _)) = &row.blob else {
            return Err(ItemError::NotDownloaded {
                item: item.to_owned(),
                file,
            });
        };
        if let Some(dir) = path.parent() {
            create_dir(dir)?;
        }
        match self.store.copy_to_file(sha256, path).await {
            Ok(_) => {}
            Err(source @ BlobError::NotFound { .. }) => {
                return Err(ItemError::MissingBlob {
                    item: item.to_owned(),
                    file,
                    source: Box::new(source),
                });
            }
            Err(source) => {
                return Err(ItemError::Blob {
                    item: item.to_owned(),
                    file,
                    source: Box::new(source),
                });
            }
        }
        if let Some(t) = mtime {
            set_mtime(path, t)?;
        }
        self.summary.files += 1;
        Ok(())
    }

    /// `download_pic(filename=base, url, mtime)`: nothing when the file is there under the URL's
    /// extension or under the one its `Content-Type` gives; else the stored bytes, dated.
    async fn download_pic(
        &mut self,
        item: &str,
        base: &Path,
        row: &MediaRow,
        t: f64,
    ) -> Result<bool, ItemError> {
        let nominal = with_suffix(base, &format!(".{}", url_extension(&row.file.url)));
        if is_file(&nominal) {
            return Ok(false);
        }
        let path = match content_type_extension(row.content_type.as_deref()) {
            Some(extension) => with_suffix(base, &extension),
            None => nominal.clone(),
        };
        if path != nominal && is_file(&path) {
            return Ok(false);
        }
        self.copy(item, row, &path, system_time(t)).await?;
        Ok(true)
    }

    /// `download_title_pic`: `<dir>/<Last-Modified>_UTC_<suffix>.jpg`, kept when a file of that
    /// name is there and at least as long as the stored one (Instaloader compares it with the
    /// answer's `Content-Length`), dated by `Last-Modified`.
    async fn title_pic(
        &mut self,
        item: &str,
        dir: &Path,
        suffix: &str,
        row: &MediaRow,
    ) -> Result<(), ItemError> {
        let date = row
            .last_modified
            .as_ref()
            .map(names::utc_stamp_of)
            .unwrap_or_default();
        let path = dir.join(format!("{date}_UTC_{suffix}.jpg"));
        if let (Some((_, size)), Ok(meta)) = (&row.blob, fs::metadata(&path))
            && meta.is_file()
            && i64::try_from(meta.len()).unwrap_or(i64::MAX) >= *size
        {
            return Ok(());
        }
        let mtime = row.last_modified.map(SystemTime::from);
        self.copy(item, row, &path, mtime).await
    }

    fn save_caption(&mut self, base: &Path, text: &str, t: f64) -> Result<(), ExportError> {
        if save_caption(base, text, t)? {
            self.summary.files += 1;
        }
        Ok(())
    }

    fn save_comments(&mut self, base: &Path, fetched: Vec<Value>) -> Result<(), ExportError> {
        if save_comments(base, fetched)? {
            self.summary.files += 1;
        }
        Ok(())
    }

    /// `save_structure_to_file` of a `.json.xz`: compact JSON, xz preset 6 without an
    /// integrity check, written in place.
    fn save_json(&mut self, path: &Path, structure: &Value) -> Result<(), ExportError> {
        let json = pyjson::compact(structure);
        let compressed = xz(json.as_bytes()).map_err(io_error("compress", path))?;
        if let Some(dir) = path.parent() {
            create_dir(dir)?;
        }
        fs::write(path, compressed).map_err(io_error("write", path))?;
        self.summary.files += 1;
        Ok(())
    }

    async fn profile(&mut self, profile: &ArchivedProfile) -> Result<(), ExportError> {
        let user = profile.profile_as_sent.as_ref().unwrap_or(&profile.raw);
        let node = nodes::profile_node(user, profile.app_user_as_sent.as_ref());
        // `Profile.username` is lower-cased; `userid` is `int(node["id"])`.
        let username = node
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or(&profile.username)
            .to_lowercase();
        let userid = node
            .get("id")
            .and_then(nodes::py_int)
            .and_then(|id| i64::try_from(id).ok())
            .unwrap_or(profile.id);
        // The `id` file and the profile JSON go to the unsanitised `{target}`, everything else to
        // the sanitised one (Instaloader formats the two differently; they differ only for a
        // name that starts with '.').
        let plain_dir = self.root.join(&username);
        let dir = self.root.join(sanitize(&username));
        self.id_file(&plain_dir, &username, userid)?;
        self.summary.profiles += 1;

        let pic_item = MediaTarget::ProfilePic(username.clone()).to_string();
        let pictures = self.files(&pic_item).await?;
        let written = match pictures.get(0, MediaVariant::Picture) {
            Ok(row) => {
                let row = row.clone();
                self.title_pic(&pic_item, &dir, "profile_pic", &row).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            self.fail(&e);
        }
        let structure = nodes::structure(Value::Object(node.clone()), "Profile");
        self.save_json(
            &plain_dir.join(format!("{username}_{userid}.json.xz")),
            &structure,
        )?;

        let items = results::archived_story_items(self.pool, profile.id).await?;
        let (stories, kept): (Vec<_>, Vec<_>) =
            items.iter().partition(|i| i.highlight_id.is_none());
        let mut highlights: BTreeMap<&str, Vec<&ArchivedStoryItem>> = BTreeMap::new();
        for item in kept {
            if let Some(id) = item.highlight_id.as_deref() {
                highlights.entry(id).or_default().push(item);
            }
        }
        for (highlight, items) in highlights {
            self.summary.highlights += 1;
            let title = items[0].highlight_title.as_deref().unwrap_or("");
            let target = self.root.join(sanitize(&username)).join(sanitize(title));
            // The cover's item is `highlight:ID`, which is also how items name their highlight.
            let covers = self.files(highlight).await?;
            let cover = match covers.get(0, MediaVariant::Picture) {
                Ok(row) => {
                    let row = row.clone();
                    self.title_pic(highlight, &target, "cover", &row).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = cover {
                // A failed cover ends the profile's highlights in Instaloader.
                self.fail(&e);
                break;
            }
            for item in items {
                let owner = node.clone();
                if let Err(e) = self.story_item(&target, item, Some(owner)).await {
                    self.fail(&e);
                }
            }
        }

        for id in results::archived_post_ids(self.pool, profile.id).await? {
            let Some(post) = results::archived_post(self.pool, id).await? else {
                continue;
            };
            let comments = results::archived_comments(self.pool, &post.shortcode).await?;
            if let Err(e) = self.post(&dir, &post, &comments).await {
                self.fail(&e);
            }
        }

        for item in stories {
            let owner = item.reel_user_as_sent.as_ref().map(nodes::plain_profile);
            if let Err(e) = self.story_item(&dir, item, owner).await {
                self.fail(&e);
            }
        }
        Ok(())
    }

    /// `save_profile_id`, first run only; an `id` of another profile is refused.
    fn id_file(&mut self, dir: &Path, username: &str, userid: i64) -> Result<(), ExportError> {
        let path = dir.join("id");
        match fs::read_to_string(&path) {
            Ok(found) if found.trim().parse::<i64>().ok() == Some(userid) => Ok(()),
            Ok(found) => Err(ExportError::IdMismatch {
                path,
                username: username.to_owned(),
                found: found.trim().chars().take(40).collect(),
                expected: userid,
            }),
            Err(_) => {
                create_dir(dir)?;
                fs::write(&path, format!("{userid}\n")).map_err(io_error("write", &path))?;
                self.summary.files += 1;
                Ok(())
            }
        }
    }

    /// `download_post`: its pictures and videos, caption, comments and JSON, in Instaloader's
    /// order; a failed picture or video ends the post there (a video's thumbnail excepted).
    async fn post(
        &mut self,
        dir: &Path,
        post: &ArchivedPost,
        comments: &[ArchivedComment],
    ) -> Result<(), ItemError> {
        let item = MediaTarget::Post(post.shortcode.clone()).to_string();
        let node = nodes::post_node(&PostSources {
            listing: post.listing_as_sent.as_ref(),
            full: post.full_as_sent.as_ref(),
            raw: &post.raw,
        });
        let t = nodes::post_time(&node.before)
            .or_else(|| post.taken_at.map(|t| t.timestamp() as f64))
            .ok_or_else(|| ItemError::NoTime { item: item.clone() })?;
        let stamp = utc_stamp(t).ok_or_else(|| ItemError::NoTime { item: item.clone() })?;
        let base = dir.join(format!("{stamp}_UTC"));
        let files = self.files(&item).await?;
        let typename = node
            .before
            .get("__typename")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| post.typename.clone())
            .unwrap_or_default();
        self.summary.posts += 1;
        match typename.as_str() {
            "GraphSidecar" => {
                let children = nodes::sidecar_videos(&node.before).unwrap_or_else(|| {
                    // Without the listing's children, the stored files say which there are.
                    let mut videos: BTreeMap<i32, bool> = BTreeMap::new();
                    for (position, variant) in files.rows.keys().filter(|(p, _)| *p > 0) {
                        *videos.entry(*position).or_default() |= *variant == MediaVariant::Video;
                    }
                    videos.into_values().collect()
                });
                let all_there = children.iter().enumerate().all(|(k, video)| {
                    let child = with_suffix(&base, &format!("_{}", k + 1));
                    is_file(&with_suffix(&child, ".jpg"))
                        && (!video || is_file(&with_suffix(&child, ".mp4")))
                });
                if !all_there {
                    for (k, video) in children.iter().enumerate() {
                        let position = i32::try_from(k + 1).unwrap_or(i32::MAX);
                        let child = with_suffix(&base, &format!("_{position}"));
                        let picture = files.get(position, MediaVariant::Picture)?.clone();
                        self.download_pic(&item, &child, &picture, t).await?;
                        if *video {
                            let clip = files.get(position, MediaVariant::Video)?.clone();
                            self.download_pic(&item, &child, &clip, t).await?;
                        }
                    }
                }
            }
            "GraphImage" if !is_file(&with_suffix(&base, ".jpg")) => {
                let picture = files.get(0, MediaVariant::Picture)?.clone();
                self.download_pic(&item, &base, &picture, t).await?;
            }
            // A failed thumbnail is reported, and the post goes on (Instaloader's error_catcher
            // around it).
            "GraphVideo" if !is_file(&with_suffix(&base, ".jpg")) => {
                let thumbnail = match files.get(0, MediaVariant::Picture) {
                    Ok(row) => {
                        let row = row.clone();
                        self.download_pic(&item, &base, &row, t).await.map(|_| ())
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = thumbnail {
                    self.fail(&e);
                }
            }
            _ => {}
        }
        if let Some(text) = nodes::caption_file_text(nodes::post_caption(&node.before).as_deref()) {
            self.save_caption(&base, &text, t)?;
        }
        let is_video = node.before.get("is_video").and_then(Value::as_bool) == Some(true);
        if is_video && !is_file(&with_suffix(&base, ".mp4")) {
            let video = files.get(0, MediaVariant::Video)?.clone();
            self.download_pic(&item, &base, &video, t).await?;
        }
        let stored: Vec<StoredComment> = comments
            .iter()
            .map(|c| StoredComment {
                id: c.id,
                parent_id: c.parent_id,
                node: c.as_sent.as_ref().unwrap_or(&c.raw),
            })
            .collect();
        self.save_comments(&base, nodes::fetched_comments(&stored))?;
        let structure = nodes::structure(Value::Object(node.saved), "Post");
        self.save_json(&with_suffix(&base, ".json.xz"), &structure)?;
        Ok(())
    }

    /// `download_storyitem`: a video's `.mp4`, then the picture (a video's thumbnail), then the
    /// JSON; a failed file ends the item there.
    async fn story_item(
        &mut self,
        dir: &Path,
        item: &ArchivedStoryItem,
        owner: Option<Object>,
    ) -> Result<(), ItemError> {
        let name = MediaTarget::Story(item.id.clone()).to_string();
        let app = item.app_item_as_sent.as_ref().unwrap_or(&item.raw);
        let node = nodes::story_item_node(item.web_item_as_sent.as_ref(), Some(app), owner);
        let t = nodes::story_time(&node)
            .or_else(|| item.taken_at.map(|t| t.timestamp() as f64))
            .ok_or_else(|| ItemError::NoTime { item: name.clone() })?;
        let stamp = utc_stamp(t).ok_or_else(|| ItemError::NoTime { item: name.clone() })?;
        let base = dir.join(format!("{stamp}_UTC"));
        let files = self.files(&name).await?;
        self.summary.story_items += 1;
        let is_video = node
            .get("is_video")
            .and_then(Value::as_bool)
            .unwrap_or(app.get("media_type").and_then(Value::as_i64) == Some(2));
        if is_video && !is_file(&with_suffix(&base, ".mp4")) {
            let video = files.get(0, MediaVariant::Video)?.clone();
            self.download_pic(&name, &base, &video, t).await?;
        }
        if !is_file(&with_suffix(&base, ".jpg")) {
            let picture = files.get(0, MediaVariant::Picture)?.clone();
            self.download_pic(&name, &base, &picture, t).await?;
        }
        let structure = nodes::structure(Value::Object(node), "StoryItem");
        self.save_json(&with_suffix(&base, ".json.xz"), &structure)?;
        Ok(())
    }
}

/// `save_caption`: an unchanged caption is left alone (not even dated); a changed one moves
/// the old text aside (`B_old_01.txt`, the newest old text numbered lowest).
fn save_caption(base: &Path, text: &str, t: f64) -> Result<bool, ExportError> {
    let path = with_suffix(base, ".txt");
    if let Ok(existing) = fs::read(&path) {
        let lf = |b: &[u8]| String::from_utf8_lossy(b).replace("\r\n", "\n");
        if lf(&existing) == lf(text.as_bytes()) {
            return Ok(false);
        }
        let numbered = |index: usize| {
            if index == 0 {
                path.clone()
            } else {
                with_suffix(base, &format!("_old_{index:02}.txt"))
            }
        };
        let mut free = 0;
        while is_file(&numbered(free)) {
            free += 1;
        }
        for index in (1..=free).rev() {
            let (from, to) = (numbered(index - 1), numbered(index));
            fs::rename(&from, &to).map_err(io_error("move aside", &from))?;
        }
    }
    fs::write(&path, text).map_err(io_error("write", &path))?;
    if let Some(t) = system_time(t) {
        set_mtime(&path, t)?;
    }
    Ok(true)
}

/// `update_comments`: the comments already in `B_comments.json` (if any) and the post's
/// stored comments, merged; no file when there are none.
fn save_comments(base: &Path, fetched: Vec<Value>) -> Result<bool, ExportError> {
    let path = with_suffix(base, "_comments.json");
    let existing = fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|v| match v {
            Value::Array(items) => Some(items),
            _ => None,
        })
        .unwrap_or_default();
    if existing.is_empty() && fetched.is_empty() {
        return Ok(false);
    }
    let comments = nodes::comments_to_save(existing, fetched);
    fs::write(&path, pyjson::indented(&Value::Array(comments)))
        .map_err(io_error("write", &path))?;
    Ok(true)
}

/// `lzma.compress(data, format=FORMAT_XZ, check=CHECK_NONE, preset=6)`.
fn xz(data: &[u8]) -> io::Result<Vec<u8>> {
    let stream = liblzma::stream::Stream::new_easy_encoder(6, liblzma::stream::Check::None)
        .map_err(io::Error::other)?;
    let mut encoder = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    encoder.write_all(data)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A fresh directory of the test's own.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("trawl-instaloader-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_changed_caption_moves_the_older_ones_aside_and_an_unchanged_one_stays() {
        let dir = scratch("captions");
        let base = dir.join("2025-12-31_23-55-41_UTC");
        let t = 1_767_225_341.0;
        assert!(save_caption(&base, "one\n", t).unwrap());
        let read = |suffix: &str| fs::read_to_string(with_suffix(&base, suffix)).unwrap();
        let mtime = |suffix: &str| fs::metadata(with_suffix(&base, suffix)).unwrap().modified();
        assert_eq!(mtime(".txt").unwrap(), system_time(t).unwrap());
        // Same text (CRLF taken as LF): not written, not even dated.
        fs::write(with_suffix(&base, ".txt"), "one\r\n").unwrap();
        let before = mtime(".txt").unwrap();
        assert!(!save_caption(&base, "one\n", t).unwrap());
        assert_eq!(mtime(".txt").unwrap(), before);
        assert!(save_caption(&base, "two\n", t).unwrap());
        assert!(save_caption(&base, "three\n", t).unwrap());
        assert_eq!(read(".txt"), "three\n");
        assert_eq!(
            read("_old_01.txt"),
            "two\n",
            "the newest old caption numbered lowest"
        );
        assert_eq!(read("_old_02.txt"), "one\r\n");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn comments_of_two_posts_of_one_second_share_one_file() {
        let dir = scratch("comments");
        let base = dir.join("2025-12-31_23-55-41_UTC");
        let comment = |id: i64, at: i64| {
            json!({"id": id, "created_at": at, "text": "t", "owner": {}, "likes_count": 0,
                "answers": []})
        };
        assert!(
            !save_comments(&base, Vec::new()).unwrap(),
            "no comments, no file"
        );
        assert!(save_comments(&base, vec![comment(1, 10)]).unwrap());
        assert!(save_comments(&base, vec![comment(2, 20), comment(1, 10)]).unwrap());
        let saved: Value =
            serde_json::from_slice(&fs::read(with_suffix(&base, "_comments.json")).unwrap())
                .unwrap();
        let ids: Vec<&Value> = saved.as_array().unwrap().iter().map(|c| &c["id"]).collect();
        assert_eq!(ids, [&json!(2), &json!(1)], "merged, newest first");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn json_is_compressed_as_xz_without_an_integrity_check() {
        let data = br#"{"node":{},"instaloader":{"version":"4.16","node_type":"Post"}}"#;
        let compressed = xz(data).unwrap();
        assert!(compressed.starts_with(b"\xfd7zXZ\x00"));
        // Stream flags: no check (0x00 0x00).
        assert_eq!(&compressed[6..8], &[0, 0]);
        let mut back = Vec::new();
        let mut decoder = liblzma::read::XzDecoder::new(&compressed[..]);
        io::Read::read_to_end(&mut decoder, &mut back).unwrap();
        assert_eq!(back, data);
    }
}
