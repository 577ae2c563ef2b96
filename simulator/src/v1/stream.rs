//! The realtime stream (`GET /v1/stream`, a WebSocket with a bearer token): after a `subscribe`
//! message naming channels (`feed`, `stories`, `notifications`) the client receives `new_post`,
//! `new_story` and `notification` events meant for it. Events carry an `event_id`; a client that
//! reconnects may send `last_event_id` with its subscription and gets what it missed first (from
//! the most recent [`super::state::REPLAY_EVENTS`]). Also the seeded activity generator that
//! makes things happen on its own.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::shapes::{World, account_name};
use super::state::{Event, NewPost, NewStory};
use super::tiers::Tier;
use super::write::{notify, publish_post, publish_story};
use super::{bad_request, bearer, gate, ok, query};
use crate::data::{TAGS, mix};
use crate::server::Sim;

/// The channels a client may subscribe to.
const CHANNELS: [&str; 3] = ["feed", "stories", "notifications"];
/// How long a new connection may wait before subscribing.
const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(30);

/// Close codes the stream uses (4000-4999 are the application's).
const CLOSE_RESTART: u16 = 4000;
const CLOSE_TOKEN_EXPIRED: u16 = 4001;
const CLOSE_TOO_SLOW: u16 = 4002;
const CLOSE_BAD_SUBSCRIPTION: u16 = 4003;

pub(super) async fn connect(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let token = bearer(&headers).map(str::to_owned);
    gate(&sim, peer, &headers, Tier::Stream, |v| {
        let upgrade = match upgrade {
            Ok(u) => u,
            Err(e) => {
                return bad_request(&format!("a WebSocket upgrade is required: {e}"), "upgrade");
            }
        };
        let (Some(account), Some(user_id), Some(token)) = (v.account, v.user_id, token) else {
            return super::TokenProblem::Missing.response();
        };
        let sim = sim.clone();
        upgrade.on_upgrade(move |socket| session(sim, account, user_id, token, socket))
    })
    .await
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_owned().into(),
    }))
}

fn error_message(message: &str) -> Message {
    Message::Text(
        json!({"type": "error", "error": {"code": "INVALID_REQUEST", "message": message}})
            .to_string()
            .into(),
    )
}

/// The subscription a client asked for: its channels and the last event it saw.
fn parse_subscribe(text: &str) -> Result<(BTreeSet<&'static str>, Option<u64>), String> {
    let msg: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if msg["type"] != "subscribe" {
        return Err(
            "the first message must be {\"type\": \"subscribe\", \"channels\": [...]}".into(),
        );
    }
    let Some(list) = msg["channels"].as_array() else {
        return Err("channels must be a list".into());
    };
    let mut channels = BTreeSet::new();
    for c in list {
        let name = c.as_str().unwrap_or_default();
        let Some(known) = CHANNELS.iter().find(|k| **k == name) else {
            return Err(format!(
                "unknown channel {c}: feed, stories or notifications"
            ));
        };
        channels.insert(*known);
    }
    if channels.is_empty() {
        return Err("channels must name at least one channel".into());
    }
    let last = match &msg["last_event_id"] {
        Value::Null => None,
        v => Some(v.as_u64().ok_or("last_event_id must be a number")?),
    };
    Ok((channels, last))
}

/// Whether `event` is for `user` on `channels`.
fn meant_for(sim: &Sim, event: &Event, user: u64, channels: &BTreeSet<&str>) -> bool {
    if !channels.contains(event.channel) {
        return false;
    }
    if event.subject == user {
        return true;
    }
    if event.channel == "notifications" {
        return false;
    }
    sim.v1
        .overlay
        .lock()
        .is_ok_and(|o| World::new(sim, &o).follows(user, event.subject))
}

async fn session(sim: Arc<Sim>, account: String, user: u64, token: String, mut socket: WebSocket) {
    let mut closing = sim.v1.close_streams.subscribe();
    let first = tokio::time::timeout(SUBSCRIBE_WITHIN, socket.recv()).await;
    let text = match first {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        Ok(Some(Ok(_))) => String::new(),
        Ok(_) => return,
        Err(_) => {
            let _ = socket
                .send(close(CLOSE_BAD_SUBSCRIPTION, "no subscription"))
                .await;
            return;
        }
    };
    let (channels, last_seen) = match parse_subscribe(&text) {
        Ok(s) => s,
        Err(message) => {
            let _ = socket.send(error_message(&message)).await;
            let _ = socket
                .send(close(CLOSE_BAD_SUBSCRIPTION, "bad subscription"))
                .await;
            return;
        }
    };
    // Subscribe before replaying, so nothing falls between the two; the replay's ids say where
    // live events start.
    let mut events = sim.v1.events.subscribe();
    let replay: Vec<Event> = match last_seen {
        None => Vec::new(),
        Some(after) => sim
            .v1
            .recent
            .lock()
            .map(|r| r.iter().filter(|e| e.id > after).cloned().collect())
            .unwrap_or_default(),
    };
    let mut sent_up_to = last_seen.unwrap_or(0);
    let subscribed = json!({"type": "subscribed", "channels": channels, "account": account});
    if socket
        .send(Message::Text(subscribed.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    for e in replay {
        if meant_for(&sim, &e, user, &channels)
            && socket
                .send(Message::Text(e.body.to_string().into()))
                .await
                .is_err()
        {
            return;
        }
        sent_up_to = sent_up_to.max(e.id);
    }
    let mut token_check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(e) => {
                    if e.id <= sent_up_to {
                        continue;
                    }
                    sent_up_to = e.id;
                    if meant_for(&sim, &e, user, &channels)
                        && socket.send(Message::Text(e.body.to_string().into())).await.is_err()
                    {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    let _ = socket.send(close(CLOSE_TOO_SLOW, "fell behind: resume with last_event_id")).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(Message::Ping(p))) => {
                    let _ = socket.send(Message::Pong(p)).await;
                }
                Some(Ok(_)) => {}
            },
            _ = closing.changed() => {
                let _ = socket.send(close(CLOSE_RESTART, "server restart: reconnect")).await;
                return;
            }
            _ = token_check.tick() => {
                if sim.v1.account_for(&token).is_err() {
                    let _ = socket.send(close(CLOSE_TOKEN_EXPIRED, "token expired: refresh and reconnect")).await;
                    return;
                }
            }
        }
    }
}

/// `POST /__sim/v1/streams/close`: closes every open stream with code 4000, as a server restart
/// would (tests of reconnecting clients).
pub(super) async fn close_all(State(sim): State<Arc<Sim>>) -> Response {
    sim.v1.close_streams.send_modify(|n| *n += 1);
    ok(json!({"closed": true}))
}

/// `POST /__sim/v1/activity?n=K`: runs K steps of the activity generator now.
pub(super) async fn activity_now(State(sim): State<Arc<Sim>>, RawQuery(raw): RawQuery) -> Response {
    let n = match query(&raw).get("n").map(|n| n.parse::<u64>()) {
        None => 1,
        Some(Ok(n)) if n <= 10_000 => n,
        Some(_) => return bad_request("n must be 0 to 10000", "n"),
    };
    let events: Vec<Value> = (0..n).filter_map(|_| step(&sim)).collect();
    ok(json!({ "events": events }))
}

/// Runs the activity generator every `period` until the task is dropped.
pub(crate) async fn run_activity(sim: Arc<Sim>, period: Duration) {
    let mut every = tokio::time::interval(period.max(Duration::from_millis(10)));
    every.tick().await;
    loop {
        every.tick().await;
        step(&sim);
    }
}

/// One step of the generator: in turn, a user the accounts follow posts, one posts a story, and
/// an account gets a like or a follow. Which user and which account is drawn from the seed and
/// the step's number, so the same configuration makes the same sequence. Returns the event made.
fn step(sim: &Sim) -> Option<Value> {
    let mut o = sim.v1.overlay.lock().ok()?;
    let t = o.ticks;
    o.ticks += 1;
    let seed = sim.data.seed;
    let mut accounts: Vec<u64> = sim
        .accounts
        .keys()
        .map(|a| sim.account_user_id(a))
        .collect();
    accounts.sort_unstable();
    let mut authors: Vec<u64> = {
        let w = World::new(sim, &o);
        accounts
            .iter()
            .flat_map(|&a| w.following(a))
            .filter(|&u| sim.data.user_by_id(u).is_some())
            .collect()
    };
    authors.sort_unstable();
    authors.dedup();
    if authors.is_empty() {
        authors = sim
            .data
            .users
            .iter()
            .filter(|u| !u.is_private)
            .map(|u| u.id)
            .collect();
    }
    let pick = |list: &[u64], k: u64| {
        list.get((mix(seed, 50, t, k) % list.len().max(1) as u64) as usize)
            .copied()
    };
    let author = pick(&authors, 0)?;
    let now = sim.unix_now() as i64;
    match t % 3 {
        0 => {
            let id = sim.v1.new_id();
            let tag = TAGS[(mix(seed, 51, t, 0) % TAGS.len() as u64) as usize];
            let post = NewPost {
                id,
                owner: author,
                caption: format!("just now #{tag}"),
                location_id: None,
                user_tags: Vec::new(),
                media: vec![(format!("gen_{id}"), "photo")],
                created_at: now,
            };
            o.posts.push(post.clone());
            publish_post(sim, &o, &post);
            Some(
                json!({"type": "new_post", "post_id": id.to_string(), "user_id": author.to_string()}),
            )
        }
        1 => {
            let id = sim.v1.new_id();
            let story = NewStory {
                id,
                owner: author,
                media_id: format!("gen_{id}"),
                media_type: "photo",
                created_at: now,
                expires_at: now + sim.v1.story_life.as_secs().max(1) as i64,
            };
            o.stories.push(story.clone());
            publish_story(sim, &o, &story);
            Some(
                json!({"type": "new_story", "story_id": id.to_string(), "user_id": author.to_string()}),
            )
        }
        _ => {
            let target = pick(&accounts, 1)?;
            account_name(sim, target)?;
            let newest = World::new(sim, &o).posts_of(target).first().map(|p| p.id());
            let kind = match newest {
                Some(post) => {
                    o.likes.insert((author, post));
                    notify(sim, &mut o, target, "like", author, Some(post));
                    "like"
                }
                None => {
                    o.unfollows.remove(&(author, target));
                    o.follows.insert((author, target));
                    notify(sim, &mut o, target, "follow", author, None);
                    "follow"
                }
            };
            Some(
                json!({"type": "notification", "kind": kind, "user_id": target.to_string(),
                        "actor_id": author.to_string()}),
            )
        }
    }
}
