//! The words of the queue: job kinds, job states, what a submitted job looks like on the wire
//! ([`JobSpec`]) and after validation ([`NewJob`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// One kind of crawl. Each kind has one crawler in the worker and one shape of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Profile,
    ProfilePosts,
    PostComments,
    Followers,
    Followees,
    HashtagPosts,
    Stories,
    Highlights,
    Post,
    /// The pictures and videos of one item (a post, a story item, a profile picture), fetched
    /// into the blob store.
    Media,
    // The v1 platform's kinds (docs/v1-client.md): read by an account of that platform only.
    /// One user's profile, by user id.
    V1User,
    /// A user's posts, by user id.
    V1UserPosts,
    /// One post with all its comments, by post id.
    V1Post,
    /// Who follows a user, by user id.
    V1Followers,
    /// Whom a user follows, by user id.
    V1Following,
    /// The feed of the account named by the target.
    V1Feed,
    /// The explore listing as the account named by the target sees it.
    V1Explore,
    /// The stories of the users the account named by the target follows.
    V1StoriesFeed,
    /// Users matching a search text.
    V1SearchUsers,
    /// Hashtags matching a search text.
    V1SearchHashtags,
    /// Locations matching a search text.
    V1SearchLocations,
    /// The notifications of the account named by the target.
    V1Notifications,
}

/// Whose API a kind reads.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    #[default]
    Instagram,
    /// The Instagram-style REST API with hourly tiers (docs/v1-client.md).
    V1,
}

impl Platform {
    pub const ALL: [Platform; 2] = [Platform::Instagram, Platform::V1];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Instagram => "instagram",
            Platform::V1 => "v1",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Platform {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown platform {:?} (known platforms: instagram, v1)",
                    s.chars().take(64).collect::<String>()
                )
            })
    }
}

/// What a kind's target names, which decides how it is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetShape {
    /// An Instagram username: 1–30 of ASCII letters, digits, `.` and `_`.
    Username,
    /// A hashtag without `#`: 1–100 letters, digits or `_` (any script).
    Hashtag,
    /// A post shortcode: 1–64 of ASCII letters, digits, `-` and `_`.
    Shortcode,
    /// One item with media: `post:SHORTCODE`, `story:ITEM_ID` (a story or highlight item) or
    /// `profile:USERNAME` (its profile picture) or `highlight:ID` (its cover). See [`MediaTarget`].
    MediaItem,
    /// A v1 user or post id: 1 to 20 ASCII digits.
    V1Id,
    /// A v1 account's name (the account whose feed, explore listing, stories or notifications
    /// are read): 1 to 64 letters, digits, '.', '_' or '-'.
    V1Account,
    /// A search text: 1 to 100 characters, no control characters, no space first or last.
    SearchText,
}

impl JobKind {
    pub const ALL: [JobKind; 22] = [
        JobKind::Profile,
        JobKind::ProfilePosts,
        JobKind::PostComments,
        JobKind::Followers,
        JobKind::Followees,
        JobKind::HashtagPosts,
        JobKind::Stories,
        JobKind::Highlights,
        JobKind::Post,
        JobKind::Media,
        JobKind::V1User,
        JobKind::V1UserPosts,
        JobKind::V1Post,
        JobKind::V1Followers,
        JobKind::V1Following,
        JobKind::V1Feed,
        JobKind::V1Explore,
        JobKind::V1StoriesFeed,
        JobKind::V1SearchUsers,
        JobKind::V1SearchHashtags,
        JobKind::V1SearchLocations,
        JobKind::V1Notifications,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Profile => "profile",
            JobKind::ProfilePosts => "profile_posts",
            JobKind::PostComments => "post_comments",
            JobKind::Followers => "followers",
            JobKind::Followees => "followees",
            JobKind::HashtagPosts => "hashtag_posts",
            JobKind::Stories => "stories",
            JobKind::Highlights => "highlights",
            JobKind::Post => "post",
            JobKind::Media => "media",
            JobKind::V1User => "v1_user",
            JobKind::V1UserPosts => "v1_user_posts",
            JobKind::V1Post => "v1_post",
            JobKind::V1Followers => "v1_followers",
            JobKind::V1Following => "v1_following",
            JobKind::V1Feed => "v1_feed",
            JobKind::V1Explore => "v1_explore",
            JobKind::V1StoriesFeed => "v1_stories_feed",
            JobKind::V1SearchUsers => "v1_search_users",
            JobKind::V1SearchHashtags => "v1_search_hashtags",
            JobKind::V1SearchLocations => "v1_search_locations",
            JobKind::V1Notifications => "v1_notifications",
        }
    }

    pub fn platform(self) -> Platform {
        match self {
            JobKind::V1User
            | JobKind::V1UserPosts
            | JobKind::V1Post
            | JobKind::V1Followers
            | JobKind::V1Following
            | JobKind::V1Feed
            | JobKind::V1Explore
            | JobKind::V1StoriesFeed
            | JobKind::V1SearchUsers
            | JobKind::V1SearchHashtags
            | JobKind::V1SearchLocations
            | JobKind::V1Notifications => Platform::V1,
            _ => Platform::Instagram,
        }
    }

    /// Kinds whose target is the account that must read it (its own feed or notifications):
    /// only the worker holding that account leases them.
    pub fn reads_own_account(self) -> bool {
        self.target_shape() == TargetShape::V1Account
    }

    pub fn target_shape(self) -> TargetShape {
        match self {
            JobKind::HashtagPosts => TargetShape::Hashtag,
            JobKind::Post | JobKind::PostComments => TargetShape::Shortcode,
            JobKind::Media => TargetShape::MediaItem,
            JobKind::V1User
            | JobKind::V1UserPosts
            | JobKind::V1Post
            | JobKind::V1Followers
            | JobKind::V1Following => TargetShape::V1Id,
            JobKind::V1Feed
            | JobKind::V1Explore
            | JobKind::V1StoriesFeed
            | JobKind::V1Notifications => TargetShape::V1Account,
            JobKind::V1SearchUsers | JobKind::V1SearchHashtags | JobKind::V1SearchLocations => {
                TargetShape::SearchText
            }
            _ => TargetShape::Username,
        }
    }

    /// Kinds Instagram serves only to a logged-in session (Instaloader refuses them without one).
    pub fn requires_login(self) -> bool {
        matches!(
            self,
            JobKind::Followers
                | JobKind::Followees
                | JobKind::Stories
                | JobKind::Highlights
                | JobKind::PostComments
        )
    }

    pub fn names() -> String {
        Self::ALL.map(|k| k.as_str()).join(", ")
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name that Trawl does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job kind {0:?} (known kinds: {kinds})", kinds = JobKind::names())]
pub struct UnknownKind(pub String);

impl FromStr for JobKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.chars().take(64).collect()))
    }
}

/// Where a job is in its life. `running` can go back to `queued` (retry, snooze, release, rescue);
/// the last three are terminal.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[sqlx(type_name = "job_state", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown job state {:?} (known states: queued, running, completed, failed, cancelled)",
                    s.chars().take(64).collect::<String>()
                )
            })
    }
}

/// serde's derive reads a struct from a map or, by position, from a sequence of its fields, so
/// `["profile", "natgeo"]` would pass for a job. Jobs and their options are JSON objects: the
/// derive runs as inherent functions (`#[serde(remote = "Self")]`) and these trait impls let
/// only a map through to it.
macro_rules! object_only {
    ($ty:ident, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                $ty::serialize(self, serializer)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ObjectOnly;
                impl<'de> serde::de::Visitor<'de> for ObjectOnly {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        map: A,
                    ) -> Result<$ty, A::Error> {
                        $ty::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                deserializer.deserialize_map(ObjectOnly)
            }
        }
    };
}

object_only!(JobOptions, "an options object such as {\"max_items\": 100}");
object_only!(
    JobSpec,
    "a job object such as {\"kind\": \"profile\", \"target\": \"natgeo\"}"
);

/// Kind-specific options stored with a job (its `payload` column).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct JobOptions {
    /// Stop after this many items (posts, comments, users). `None`: crawl everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u64>,
    /// Stop at the first item that an earlier job already stored (Instaloader's fast update).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_at_stored: bool,
    /// For kinds that find posts: queue a `post_comments` job for every post with comments.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_comments: bool,
    /// For kinds that find media: queue a `media` job for every item found (each post, story
    /// item, and the profile picture), which downloads its pictures and videos.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_media: bool,
}

impl JobKind {
    /// Kinds that page through a listing (and so checkpoint a cursor).
    pub fn is_paginated(self) -> bool {
        matches!(
            self,
            JobKind::ProfilePosts
                | JobKind::PostComments
                | JobKind::Followers
                | JobKind::Followees
                | JobKind::HashtagPosts
        ) || (self.platform() == Platform::V1
            && !matches!(self, JobKind::V1User | JobKind::V1StoriesFeed))
    }

    /// Kinds whose items have pictures or videos, which `with_media` fans out from.
    pub fn finds_media(self) -> bool {
        matches!(
            self,
            JobKind::Profile
                | JobKind::ProfilePosts
                | JobKind::HashtagPosts
                | JobKind::Post
                | JobKind::Stories
                | JobKind::Highlights
        )
    }

    /// Kinds whose items are posts, which `with_comments` fans out from.
    pub fn finds_posts(self) -> bool {
        matches!(
            self,
            JobKind::ProfilePosts | JobKind::HashtagPosts | JobKind::Post
        )
    }
}

/// A job as a client submits it (an API body, one line of a JSONL file). Every field but `kind` and
/// `target` is optional. Unknown fields are refused so that a typo never silently drops a setting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct JobSpec {
    pub kind: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recrawl_every: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<JobOptions>,
}

/// A validated job, ready to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub kind: JobKind,
    pub target: String,
    pub priority: i16,
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    /// Among queued and running jobs, at most one has a given key. Defaults to `kind:target`.
    pub unique_key: String,
    pub recrawl_every: Option<Duration>,
    pub options: JobOptions,
}

/// A field of a [`JobSpec`] that is not acceptable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

pub const MAX_PRIORITY: i16 = 100;
pub const MAX_ATTEMPTS_LIMIT: i32 = 100;
pub const MAX_UNIQUE_KEY_LEN: usize = 200;
pub const MIN_RECRAWL_INTERVAL: Duration = Duration::from_secs(1);

impl JobSpec {
    pub fn new(kind: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            target: target.into(),
            ..Self::default()
        }
    }

    /// Checks every field; `default_max_attempts` applies when the spec gives none.
    pub fn validate(self, default_max_attempts: i32) -> Result<NewJob, ValidationError> {
        let kind: JobKind = self
            .kind
            .parse()
            .map_err(|e: UnknownKind| ValidationError::new("kind", e.to_string()))?;
        let target = validate_target(kind, &self.target)?;
        let priority = self.priority.unwrap_or(0);
        if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&priority) {
            return Err(ValidationError::new(
                "priority",
                format!("must be between -{MAX_PRIORITY} and {MAX_PRIORITY} (got {priority})"),
            ));
        }
        let max_attempts = self.max_attempts.unwrap_or(default_max_attempts);
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
            return Err(ValidationError::new(
                "max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS_LIMIT} (got {max_attempts})"),
            ));
        }
        let unique_key = match self.unique_key {
            None => format!("{kind}:{target}"),
            Some(key) => {
                if key.is_empty() || key.chars().count() > MAX_UNIQUE_KEY_LEN {
                    return Err(ValidationError::new(
                        "unique_key",
                        format!("must be 1 to {MAX_UNIQUE_KEY_LEN} characters"),
                    ));
                }
                if key.chars().any(char::is_control) {
                    return Err(ValidationError::new(
                        "unique_key",
                        "must not contain control characters",
                    ));
                }
                key
            }
        };
        if let Some(at) = self.run_at {
            // Like durations (ten years at most), a time further out is a typo; before 1970
            // (or before PostgreSQL's first year) it cannot be meant either.
            let latest = Utc::now() + chrono::Duration::days(3653);
            if at.timestamp() < 0 || at > latest {
                return Err(ValidationError::new(
                    "run_at",
                    format!("must be between 1970 and ten years from now (got {at})"),
                ));
            }
        }
        let recrawl_every = match self.recrawl_every {
            Some(d) if d.0 < MIN_RECRAWL_INTERVAL => {
                return Err(ValidationError::new(
                    "recrawl_every",
                    format!("must be at least {}s", MIN_RECRAWL_INTERVAL.as_secs()),
                ));
            }
            other => other.map(|d| d.0),
        };
        let options = self.options.unwrap_or_default();
        if options.with_comments && !kind.finds_posts() {
            return Err(ValidationError::new(
                "options.with_comments",
                format!("only applies to profile_posts, hashtag_posts and post (not {kind})"),
            ));
        }
        if options.with_media && !kind.finds_media() {
            return Err(ValidationError::new(
                "options.with_media",
                format!(
                    "only applies to profile, profile_posts, hashtag_posts, post, stories and \
                     highlights (not {kind})"
                ),
            ));
        }
        if options.stop_at_stored && !kind.is_paginated() {
            return Err(ValidationError::new(
                "options.stop_at_stored",
                format!("only applies to kinds that page through a listing (not {kind})"),
            ));
        }
        if options.stop_at_stored && kind.platform() == Platform::V1 {
            return Err(ValidationError::new(
                "options.stop_at_stored",
                format!(
                    "does not apply to the v1 platform's kinds (not {kind}): use max_items to \
                     bound a listing"
                ),
            ));
        }
        if options.max_items == Some(0) {
            return Err(ValidationError::new(
                "options.max_items",
                "must be at least 1 (leave it out to crawl everything)",
            ));
        }
        Ok(NewJob {
            kind,
            target,
            priority,
            run_at: self.run_at,
            max_attempts,
            unique_key,
            recrawl_every,
            options,
        })
    }
}

/// Normalises and checks a target for its kind: a leading `@` or `#` is dropped, usernames are
/// lower-cased (Instagram usernames are case-insensitive, and dedup must see `NatGeo` = `natgeo`).
pub fn validate_target(kind: JobKind, raw: &str) -> Result<String, ValidationError> {
    if raw.is_empty() {
        return Err(ValidationError::new("target", "must not be empty"));
    }
    if raw.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "target",
            "must not contain control characters",
        ));
    }
    let shown: String = raw.chars().take(40).collect();
    match kind.target_shape() {
        TargetShape::Username => {
            let name = raw.strip_prefix('@').unwrap_or(raw);
            let ok = (1..=30).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
            if !ok {
                return Err(ValidationError::new(
                    "target",
                    format!(
                        "{shown:?} is not an Instagram username for kind {kind} (1 to 30 letters, digits, '.' or '_')"
                    ),
                ));
            }
            Ok(name.to_ascii_lowercase())
        }
        TargetShape::Hashtag => {
            let tag = raw.strip_prefix('#').unwrap_or(raw);
            let count = tag.chars().count();
            let ok =
                (1..=100).contains(&count) && tag.chars().all(|c| c.is_alphanumeric() || c == '_');
            if !ok {
                return Err(ValidationError::new(
                    "target",
                    format!(
                        "{shown:?} is not a hashtag for kind {kind} (1 to 100 letters, digits or '_', without spaces)"
                    ),
                ));
            }
            Ok(tag.to_lowercase())
        }
        TargetShape::Shortcode => {
            if !is_shortcode(raw) {
                return Err(ValidationError::new(
                    "target",
                    format!(
                        "{shown:?} is not a post shortcode for kind {kind} (1 to 64 letters, digits, '-' or '_')"
                    ),
                ));
            }
            Ok(raw.to_owned())
        }
        TargetShape::MediaItem => raw
            .parse::<MediaTarget>()
            .map(|t| t.to_string())
            .map_err(|e| ValidationError::new("target", format!("{shown:?}: {e}"))),
        TargetShape::V1Id => {
            if (1..=20).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit()) {
                Ok(raw.to_owned())
            } else {
                Err(ValidationError::new(
                    "target",
                    format!("{shown:?} is not a v1 id for kind {kind} (1 to 20 digits)"),
                ))
            }
        }
        TargetShape::V1Account => {
            if (1..=64).contains(&raw.len())
                && raw
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                Ok(raw.to_owned())
            } else {
                Err(ValidationError::new(
                    "target",
                    format!(
                        "{shown:?} is not an account name for kind {kind} (the v1 account whose \
                         listing it reads: 1 to 64 letters, digits, '.', '_' or '-')"
                    ),
                ))
            }
        }
        TargetShape::SearchText => {
            let ok = (1..=100).contains(&raw.chars().count())
                && !raw.chars().any(char::is_control)
                && !raw.starts_with(' ')
                && !raw.ends_with(' ');
            if ok {
                Ok(raw.to_owned())
            } else {
                Err(ValidationError::new(
                    "target",
                    format!(
                        "{shown:?} is not a search text for kind {kind} (1 to 100 characters, \
                         no control characters, no space first or last)"
                    ),
                ))
            }
        }
    }
}

fn is_shortcode(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The item a `media` job fetches the pictures and videos of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaTarget {
    /// A post's pictures and videos (every sidecar child), by its shortcode.
    Post(String),
    /// A story or highlight item's picture or video, by its id (`MEDIAPK` or `MEDIAPK_OWNERID`).
    Story(String),
    /// A profile's picture, by username.
    ProfilePic(String),
    /// A highlight's cover picture, by the highlight's id.
    HighlightCover(String),
}

/// A `media` target that is not `post:SHORTCODE`, `story:ITEM_ID` or `profile:USERNAME`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a media item (post:SHORTCODE, story:ITEM_ID with digits and '_', profile:USERNAME or \
     highlight:ID)"
)]
pub struct BadMediaTarget;

impl FromStr for MediaTarget {
    type Err = BadMediaTarget;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (prefix, rest) = s.split_once(':').ok_or(BadMediaTarget)?;
        match prefix {
            "post" if is_shortcode(rest) => Ok(MediaTarget::Post(rest.to_owned())),
            "story"
                if (1..=64).contains(&rest.len())
                    && rest.starts_with(|c: char| c.is_ascii_digit())
                    && rest.chars().all(|c| c.is_ascii_digit() || c == '_') =>
            {
                Ok(MediaTarget::Story(rest.to_owned()))
            }
            "highlight"
                if (1..=64).contains(&rest.len()) && rest.chars().all(|c| c.is_ascii_digit()) =>
            {
                Ok(MediaTarget::HighlightCover(rest.to_owned()))
            }
            "profile" => validate_target(JobKind::Profile, rest)
                .map(MediaTarget::ProfilePic)
                .map_err(|_| BadMediaTarget),
            _ => Err(BadMediaTarget),
        }
    }
}

impl fmt::Display for MediaTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaTarget::Post(code) => write!(f, "post:{code}"),
            MediaTarget::Story(id) => write!(f, "story:{id}"),
            MediaTarget::ProfilePic(name) => write!(f, "profile:{name}"),
            MediaTarget::HighlightCover(id) => write!(f, "highlight:{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in JobKind::ALL {
            assert_eq!(kind.as_str().parse::<JobKind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        let err = "profiles".parse::<JobKind>().unwrap_err().to_string();
        assert!(
            err.contains("\"profiles\"") && err.contains("profile_posts"),
            "{err}"
        );
    }

    #[test]
    fn v1_targets_are_ids_account_names_or_search_texts() {
        let valid = |kind: &str, target: &str| JobSpec::new(kind, target).validate(3);
        assert_eq!(
            valid("v1_user", "1000042").unwrap().unique_key,
            "v1_user:1000042"
        );
        assert_eq!(
            valid("v1_feed", "alice.b").unwrap().kind.platform(),
            Platform::V1
        );
        assert_eq!(
            valid("v1_search_users", "#sun set").unwrap().target,
            "#sun set"
        );
        for (kind, target, says) in [
            ("v1_user", "12a", "not a v1 id"),
            ("v1_post", "123456789012345678901", "not a v1 id"),
            ("v1_feed", "alice smith", "not an account name"),
            ("v1_search_users", " natgeo", "not a search text"),
            ("v1_search_users", "nat\ngeo", "control characters"),
        ] {
            let err = valid(kind, target).unwrap_err();
            assert_eq!(err.field, "target");
            assert!(err.to_string().contains(says), "{kind} {target:?}: {err}");
        }
        let err = JobSpec {
            options: Some(JobOptions {
                stop_at_stored: true,
                ..JobOptions::default()
            }),
            ..JobSpec::new("v1_user_posts", "5")
        }
        .validate(3)
        .unwrap_err();
        assert_eq!(err.field, "options.stop_at_stored");
        assert!(JobKind::V1Feed.reads_own_account() && !JobKind::V1User.reads_own_account());
    }

    #[test]
    fn a_spec_gets_defaults_and_a_dedup_key() {
        let job = JobSpec::new("profile_posts", "@NatGeo")
            .validate(5)
            .unwrap();
        assert_eq!(job.kind, JobKind::ProfilePosts);
        assert_eq!(job.target, "natgeo");
        assert_eq!(job.unique_key, "profile_posts:natgeo");
        assert_eq!(job.max_attempts, 5);
        assert_eq!(job.priority, 0);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: [(JobSpec, &str); 8] = [
            (JobSpec::new("nope", "natgeo"), "kind"),
            (JobSpec::new("profile", ""), "target"),
            (JobSpec::new("profile", "nat geo"), "target"),
            (JobSpec::new("profile", "a\u{0}b"), "target"),
            (JobSpec::new("hashtag_posts", "#"), "target"),
            (
                JobSpec {
                    priority: Some(1000),
                    ..JobSpec::new("profile", "x")
                },
                "priority",
            ),
            (
                JobSpec {
                    max_attempts: Some(0),
                    ..JobSpec::new("profile", "x")
                },
                "max_attempts",
            ),
            (
                JobSpec {
                    unique_key: Some(String::new()),
                    ..JobSpec::new("profile", "x")
                },
                "unique_key",
            ),
        ];
        for (spec, field) in cases {
            let err = spec.clone().validate(3).unwrap_err();
            assert_eq!(err.field, field, "{spec:?}: {err}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<JobSpec>(r#"{"kind":"profile","target":"x","priorty":3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("priorty"), "{err}");
    }

    #[test]
    fn only_objects_are_jobs_and_run_at_is_bounded() {
        let err = serde_json::from_str::<JobSpec>(r#"["profile","natgeo"]"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a job object"), "{err}");
        let err =
            serde_json::from_str::<JobSpec>(r#"{"kind":"profile","target":"x","options":[5]}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("expected an options object"), "{err}");
        let spec: JobSpec = serde_json::from_str(
            r#"{"kind":"profile_posts","target":"x","options":{"max_items":5}}"#,
        )
        .unwrap();
        let again: JobSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);
        for at in ["1969-12-31T23:59:59Z", "9999-01-01T00:00:00Z"] {
            let spec = JobSpec {
                run_at: Some(at.parse().unwrap()),
                ..JobSpec::new("profile", "x")
            };
            assert_eq!(spec.validate(3).unwrap_err().field, "run_at", "{at}");
        }
    }

    #[test]
    fn media_targets_name_one_item() {
        for (raw, stored) in [
            ("post:CkA-_9", "post:CkA-_9"),
            ("story:3012_17841", "story:3012_17841"),
            ("profile:@NatGeo", "profile:natgeo"),
            ("highlight:17890", "highlight:17890"),
        ] {
            assert_eq!(validate_target(JobKind::Media, raw).unwrap(), stored);
        }
        for bad in [
            "CkA",
            "post:",
            "post:a b",
            "story:abc",
            "story:_1",
            "profile:no/pe",
            "reel:1",
            "highlight:x",
        ] {
            let err = validate_target(JobKind::Media, bad).unwrap_err();
            assert_eq!(err.field, "target", "{bad}");
            assert!(err.message.contains("post:SHORTCODE"), "{bad}: {err}");
        }
        let err = JobSpec {
            options: Some(JobOptions {
                with_media: true,
                ..JobOptions::default()
            }),
            ..JobSpec::new("followers", "someone")
        }
        .validate(3)
        .unwrap_err();
        assert_eq!(err.field, "options.with_media");
    }

    #[test]
    fn hashtags_accept_any_script() {
        let job = JobSpec::new("hashtag_posts", "#Café_2026")
            .validate(3)
            .unwrap();
        assert_eq!(job.target, "café_2026");
    }
}
