//! What the v1 API keeps beside the generated data set: tokens, and the overlay of everything
//! writes and the activity generator added (posts, comments, likes, stories, views, follows,
//! profile edits, notifications), plus the event bus the stream reads.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::TokenProblem;

/// The v1 API's settings.
#[derive(Debug, Clone, Default)]
pub struct V1Config {
    /// How often (in simulated seconds, scaled by the time scale) the activity generator makes
    /// something happen: a followed user posts, a story appears, a notification arrives. `None`:
    /// nothing happens unless a client writes.
    pub activity_every: Option<Duration>,
}

/// A post added through `POST /api/v1/posts` or by the activity generator.
#[derive(Debug, Clone)]
pub(crate) struct NewPost {
    pub id: u64,
    pub owner: u64,
    pub caption: String,
    pub location_id: Option<u64>,
    pub user_tags: Vec<u64>,
    /// (media id, "photo" | "video").
    pub media: Vec<(String, &'static str)>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct NewComment {
    pub id: u64,
    pub post: u64,
    pub owner: u64,
    pub text: String,
    pub parent: Option<u64>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct NewStory {
    pub id: u64,
    pub owner: u64,
    pub media_id: String,
    pub media_type: &'static str,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ProfileEdit {
    pub full_name: Option<String>,
    pub bio: Option<String>,
    pub website: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Notification {
    pub id: u64,
    pub kind: &'static str,
    pub actor: u64,
    pub post: Option<u64>,
    pub created_at: i64,
}

/// One event of the realtime stream: its channel, who may see it, and its body.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub id: u64,
    pub channel: &'static str,
    /// For `feed` and `stories`: the author, seen by whoever follows them (and by the author);
    /// for `notifications`: the one account it is for.
    pub subject: u64,
    pub body: Value,
}

/// Uploaded media files (bytes, content type).
pub(crate) type Uploads = HashMap<String, (axum::body::Bytes, &'static str)>;

#[derive(Default)]
pub(crate) struct Overlay {
    pub posts: Vec<NewPost>,
    pub deleted: HashSet<u64>,
    /// (user, post).
    pub likes: HashSet<(u64, u64)>,
    pub comments: Vec<NewComment>,
    pub stories: Vec<NewStory>,
    /// story id → viewers.
    pub views: HashMap<u64, HashSet<u64>>,
    /// (follower, followee) added after start, and removed from the data set's graph.
    pub follows: BTreeSet<(u64, u64)>,
    pub unfollows: BTreeSet<(u64, u64)>,
    /// Pending requests to follow a private user.
    pub requests: BTreeSet<(u64, u64)>,
    pub profiles: HashMap<u64, ProfileEdit>,
    /// account user id → its notifications, oldest first.
    pub notifications: HashMap<u64, Vec<Notification>>,
    /// Notifications an account has listed.
    pub read_up_to: HashMap<u64, u64>,
    pub uploads: Uploads,
    pub upload_bytes: usize,
    /// How many activity ticks have run.
    pub ticks: u64,
}

/// An access or refresh token: whose, and until when.
struct Issued {
    account: String,
    expires: Instant,
}

type TokenMap = Mutex<HashMap<String, Issued>>;

/// Adds a token, dropping the expired ones so the map stays small.
fn keep(tokens: &TokenMap, token: String, account: &str, expires: Instant) {
    if let Ok(mut tokens) = tokens.lock() {
        let now = Instant::now();
        tokens.retain(|_, t| t.expires > now);
        tokens.insert(
            token,
            Issued {
                account: account.to_owned(),
                expires,
            },
        );
    }
}

/// Drops every token of `account`; how many there were.
fn drop_account(tokens: &TokenMap, account: &str) -> usize {
    tokens.lock().map_or(0, |mut tokens| {
        let before = tokens.len();
        tokens.retain(|_, t| t.account != account);
        before - tokens.len()
    })
}

/// The most recent events kept for a stream that resumes with `last_event_id`.
pub(crate) const REPLAY_EVENTS: usize = 10_000;

pub struct V1State {
    /// How often the activity generator runs, in real time.
    pub(crate) activity_period: Option<Duration>,
    /// An access token's life, reported as `expires_in` (an hour, scaled; at least a second).
    pub(crate) token_life: Duration,
    refresh_life: Duration,
    /// A story's life (a day, scaled).
    pub(crate) story_life: Duration,
    access: TokenMap,
    refresh: TokenMap,
    pub(crate) overlay: Mutex<Overlay>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) recent: Mutex<VecDeque<Event>>,
    next_id: std::sync::atomic::AtomicU64,
    next_event: std::sync::atomic::AtomicU64,
    /// Bumped to close every open stream (the forced reconnect of tests).
    pub(crate) close_streams: tokio::sync::watch::Sender<u64>,
}

/// Ids of everything the overlay creates start here, far above the data set's.
const FIRST_NEW_ID: u64 = 1 << 52;

impl V1State {
    pub fn new(time_scale: f64, config: V1Config) -> Self {
        let (events, _) = broadcast::channel(4096);
        let (close_streams, _) = tokio::sync::watch::channel(0);
        Self {
            activity_period: config.activity_every.map(|d| d.mul_f64(time_scale)),
            token_life: Duration::from_secs((3600.0 * time_scale).round().max(1.0) as u64),
            refresh_life: Duration::from_secs_f64(30.0 * 86_400.0 * time_scale),
            story_life: Duration::from_secs_f64(86_400.0 * time_scale),
            access: Mutex::new(HashMap::new()),
            refresh: Mutex::new(HashMap::new()),
            overlay: Mutex::new(Overlay::default()),
            events,
            recent: Mutex::new(VecDeque::new()),
            next_id: std::sync::atomic::AtomicU64::new(FIRST_NEW_ID),
            next_event: std::sync::atomic::AtomicU64::new(1),
            close_streams,
        }
    }

    pub(crate) fn new_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The account a bearer token belongs to.
    pub(crate) fn account_for(&self, token: &str) -> Result<String, TokenProblem> {
        let tokens = self.access.lock().map_err(|_| TokenProblem::Unknown)?;
        let t = tokens.get(token).ok_or(TokenProblem::Unknown)?;
        if Instant::now() >= t.expires {
            return Err(TokenProblem::Expired);
        }
        Ok(t.account.clone())
    }

    pub(crate) fn issue(&self, account: &str, access: String, refresh: String) {
        let now = Instant::now();
        keep(&self.access, access, account, now + self.token_life);
        keep(&self.refresh, refresh, account, now + self.refresh_life);
    }

    /// Spends a refresh token (each works once): the account it was issued to.
    pub(crate) fn spend_refresh(&self, token: &str) -> Option<String> {
        let t = self.refresh.lock().ok()?.remove(token)?;
        (Instant::now() < t.expires).then_some(t.account)
    }

    /// Ends every token of `account`; returns how many there were.
    pub(crate) fn revoke(&self, account: &str) -> usize {
        drop_account(&self.access, account) + drop_account(&self.refresh, account)
    }

    /// Publishes an event to every open stream and keeps it for resuming ones.
    pub(crate) fn publish(&self, channel: &'static str, subject: u64, mut body: Value) {
        let id = self
            .next_event
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        body["event_id"] = Value::from(id);
        let event = Event {
            id,
            channel,
            subject,
            body,
        };
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() >= REPLAY_EVENTS {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        // No receiver is not an error: nobody is listening yet.
        let _ = self.events.send(event);
    }
}
