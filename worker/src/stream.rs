//! `trawl stream` (docs/stream.md): a process that holds one v1 account's realtime stream,
//! reconnects with backoff (resuming from the last event it handled), and turns events into jobs
//! by the configured rules. Scaled like workers: each process leases a stream nobody holds.
//!
//! It must not keep anything another process needs: the lease and the last handled event live in
//! PostgreSQL, written with each event's jobs in one transaction, so a killed process loses nothing
//! and repeats nothing, and the queue's dedup absorbs jobs other sources already queued.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use trawl_shared::accounts::Accounts;
use trawl_shared::config::{Config, StreamConfig, StreamRule};
use trawl_shared::domain::{JobOptions, NewJob};
use trawl_shared::limiter::Limiter;
use trawl_shared::queue::Queue;
use trawl_shared::secret::Secret;
use trawl_shared::shutdown::Shutdown;
use trawl_shared::streams::{self, StreamError, StreamLease};
use trawl_shared::{JobKind, JobSpec, Platform};

use crate::v1::{V1Client, V1Error};
use crate::{ProcessBase, WorkerError, egress, owner_name, probes};

/// What the stream process counts.
pub struct StreamMetrics {
    pub registry: Registry,
    /// Events received, by type (`new_post`, `new_story`, `notification`, `other`).
    pub events: IntCounterVec,
    /// Jobs the rules made, by kind and outcome (`created`, `duplicate`: an active job with the
    /// same key absorbed it, `invalid`: the event's id was not a valid target).
    pub jobs: IntCounterVec,
    /// Reconnections, by reason.
    pub reconnects: IntCounterVec,
    /// 1 while subscribed.
    pub connected: IntGauge,
}

impl StreamMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let events = IntCounterVec::new(
            Opts::new(
                "trawl_stream_events_total",
                "Events received on v1 realtime streams, by type",
            ),
            &["type"],
        )?;
        let jobs = IntCounterVec::new(
            Opts::new(
                "trawl_stream_jobs_total",
                "Jobs stream rules made of events, by kind and outcome",
            ),
            &["kind", "outcome"],
        )?;
        let reconnects = IntCounterVec::new(
            Opts::new(
                "trawl_stream_reconnects_total",
                "Stream connections lost or refused and tried again, by reason",
            ),
            &["reason"],
        )?;
        let connected = IntGauge::new(
            "trawl_stream_connected",
            "1 while this process is subscribed to a stream",
        )?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(reconnects.clone()))?;
        registry.register(Box::new(connected.clone()))?;
        for kind in ["new_post", "new_story", "notification", "other"] {
            events.with_label_values(&[kind]);
        }
        for kind in JobKind::ALL
            .into_iter()
            .filter(|k| k.platform() == Platform::V1)
        {
            for outcome in JOB_OUTCOMES {
                jobs.with_label_values(&[kind.as_str(), outcome]);
            }
        }
        for reason in RECONNECT_REASONS {
            reconnects.with_label_values(&[reason]);
        }
        Ok(Self {
            registry,
            events,
            jobs,
            reconnects,
            connected,
        })
    }
}

/// What became of a job a rule made.
const JOB_OUTCOMES: [&str; 3] = ["created", "duplicate", "invalid"];
/// Why the stream reconnected (`Ended::label`).
const RECONNECT_REASONS: [&str; 5] = [
    "server_restart",
    "lagged",
    "closed",
    "token_expired",
    "error",
];

/// Why a connection ended.
#[derive(Debug)]
enum Ended {
    /// The server closed it (restart, lag, a bad subscription), with its code.
    Closed(u16),
    /// The server said the token expired.
    TokenExpired,
    /// The connection could not be made or broke.
    Failed(String),
    /// Another process holds the stream now.
    LeaseLost,
    /// The account was disabled or checkpointed: its stream is left.
    OutOfRotation,
    Stopping,
}

/// Where this process's hold on a stream stands, as its heartbeat finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    Held,
    Lost,
    OutOfRotation,
}

impl Ended {
    fn label(&self) -> &'static str {
        match self {
            Ended::Closed(4000) => "server_restart",
            Ended::Closed(4002) => "lagged",
            Ended::Closed(_) => "closed",
            Ended::TokenExpired => "token_expired",
            Ended::Failed(_) => "error",
            Ended::LeaseLost => "lease_lost",
            Ended::OutOfRotation => "out_of_rotation",
            Ended::Stopping => "stopping",
        }
    }
}

/// One stream process.
struct Streamer {
    config: StreamConfig,
    v1: trawl_shared::config::V1ApiConfig,
    default_max_attempts: i32,
    owner: String,
    pool: PgPool,
    accounts: Accounts,
    limiter: Arc<Limiter>,
    metrics: Arc<StreamMetrics>,
    shutdown: Shutdown,
}

/// Runs a stream process until `shutdown`; then it gives its stream back at once.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    shutdown: Shutdown,
    insecure_dev_key: bool,
) -> Result<(), WorkerError> {
    // A heartbeat, an event's transaction and a limiter grant at most at once.
    let ProcessBase {
        secrets,
        pool,
        limiter,
        limiter_metrics,
    } = ProcessBase::open(config, insecure_dev_key, 3, "trawl-stream").await?;
    let metrics = Arc::new(StreamMetrics::new()?);
    let probes = tokio::spawn(probes::serve(
        listener,
        probes::ProbeState {
            pool: pool.clone(),
            registries: vec![metrics.registry.clone(), limiter_metrics.registry.clone()],
        },
        shutdown.clone(),
    ));
    let streamer = Streamer {
        config: config.stream.clone(),
        v1: config.v1.clone(),
        default_max_attempts: config.queue.default_max_attempts,
        owner: owner_name(),
        accounts: Accounts::new(pool.clone(), secrets),
        pool: pool.clone(),
        limiter,
        metrics,
        shutdown,
    };
    tracing::info!(owner = %streamer.owner, rules = streamer.config.rules.len(), "stream starting");
    streamer.lease_loop().await;
    tracing::info!("stream stopped");
    pool.close().await;
    probes.await.map_err(std::io::Error::other)??;
    Ok(())
}

impl Streamer {
    async fn sleep_or_stop(&self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => false,
            () = self.shutdown.clone().wait() => true,
        }
    }

    async fn lease_loop(&self) {
        let mut waiting_logged = false;
        while !self.shutdown.is_triggered() {
            match streams::lease(&self.pool, &self.owner, self.config.lease.0).await {
                Ok(Some(lease)) => {
                    waiting_logged = false;
                    tracing::info!(account = %lease.account, resume_after = ?lease.last_event_id,
                        "stream leased");
                    self.hold(lease).await;
                }
                Ok(None) => {
                    if !waiting_logged {
                        tracing::info!("every v1 account's stream is held; waiting");
                        waiting_logged = true;
                    }
                    if self.sleep_or_stop(self.config.account_poll.0).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot lease a stream; retrying");
                    if self.sleep_or_stop(self.config.account_poll.0).await {
                        return;
                    }
                }
            }
        }
    }

    /// Holds one account's stream until the lease is lost, the account leaves rotation or the
    /// process stops.
    async fn hold(&self, mut lease: StreamLease) {
        let password = match self.accounts.password(&lease.account).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                tracing::error!(account = %lease.account, "no password stored; giving it back");
                self.give_back(&lease).await;
                self.sleep_or_stop(self.config.account_poll.0).await;
                return;
            }
            Err(e) => {
                tracing::error!(account = %lease.account, error = %e,
                    "cannot open the account's password; giving it back");
                self.give_back(&lease).await;
                self.sleep_or_stop(self.config.account_poll.0).await;
                return;
            }
        };
        let http = match egress::client_builder(None)
            .and_then(|b| b.timeout(self.v1.request_timeout.0).build())
        {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the HTTP client");
                self.give_back(&lease).await;
                return;
            }
        };
        let client = V1Client::new(
            http,
            self.v1.base.clone(),
            lease.account.clone(),
            Secret::new(password),
            self.limiter.clone(),
        );
        let (held, holding) = tokio::sync::watch::channel(Hold::Held);
        let heartbeat = tokio::spawn({
            let (pool, lease, ttl) = (self.pool.clone(), lease.clone(), self.config.lease.0);
            async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    match streams::heartbeat(&pool, &lease, ttl).await {
                        Ok(()) => {}
                        Err(StreamError::LeaseLost(_)) => {
                            let _ = held.send(Hold::Lost);
                            return;
                        }
                        Err(StreamError::OutOfRotation(_)) => {
                            let _ = held.send(Hold::OutOfRotation);
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "stream heartbeat failed; retrying"),
                    }
                }
            }
        });
        let mut failures: u32 = 0;
        loop {
            let ended = self.connection(&client, &mut lease, &holding).await;
            self.metrics.connected.set(0);
            match ended {
                (Ended::Stopping, _) => break,
                (Ended::LeaseLost, _) => {
                    tracing::warn!(account = %lease.account,
                        "stream lease lost (another process holds it now)");
                    break;
                }
                (Ended::OutOfRotation, _) => {
                    tracing::warn!(account = %lease.account,
                        "the account was disabled or taken out of rotation; leaving its stream");
                    break;
                }
                (reason, subscribed) => {
                    self.metrics
                        .reconnects
                        .with_label_values(&[reason.label()])
                        .inc();
                    match &reason {
                        Ended::TokenExpired => client.expire_access().await,
                        Ended::Failed(why) => tracing::warn!(account = %lease.account, %why,
                            "stream connection failed"),
                        _ => {}
                    }
                    failures = if subscribed { 1 } else { failures + 1 };
                    let wait = backoff(&self.config, failures);
                    tracing::info!(account = %lease.account, ?reason,
                        wait_ms = wait.as_millis() as u64, "stream ended; reconnecting");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = self.interrupted(&holding) => {}
                    }
                }
            }
        }
        heartbeat.abort();
        if *holding.borrow() != Hold::Lost {
            self.give_back(&lease).await;
        }
    }

    /// Resolves when the connection must end for a reason of the process's, not the server's:
    /// a stop, the lease lost, or the account out of rotation.
    async fn interrupted(&self, holding: &tokio::sync::watch::Receiver<Hold>) -> Ended {
        let mut holding = holding.clone();
        let hold_ended = async {
            match holding.wait_for(|h| *h != Hold::Held).await.map(|h| *h) {
                Ok(Hold::OutOfRotation) => Ended::OutOfRotation,
                Ok(_) => Ended::LeaseLost,
                // The heartbeat task ended without a verdict (aborted): nothing to wait for.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            () = self.shutdown.clone().wait() => Ended::Stopping,
            e = hold_ended => e,
        }
    }

    async fn give_back(&self, lease: &StreamLease) {
        if let Err(e) = streams::release(&self.pool, lease).await {
            tracing::warn!(error = %e, "cannot give the stream back; its lease will expire");
        }
    }

    /// One connection: connect, subscribe (resuming after the last handled event), handle events
    /// until it ends. Returns why, and whether it got as far as the subscription.
    async fn connection(
        &self,
        client: &V1Client,
        lease: &mut StreamLease,
        holding: &tokio::sync::watch::Receiver<Hold>,
    ) -> (Ended, bool) {
        match *holding.borrow() {
            Hold::Held => {}
            Hold::Lost => return (Ended::LeaseLost, false),
            Hold::OutOfRotation => return (Ended::OutOfRotation, false),
        }
        let connect = async {
            client.admit("stream").await?;
            let token = client.bearer().await?;
            Ok::<_, V1Error>(token)
        };
        let token = tokio::select! {
            t = connect => t,
            e = self.interrupted(holding) => return (e, false),
        };
        let token = match token {
            Ok(t) => t,
            Err(e) => return (Ended::Failed(e.to_string()), false),
        };
        let mut request = match self.config.url.as_str().into_client_request() {
            Ok(r) => r,
            Err(e) => return (Ended::Failed(format!("stream.url: {e}")), false),
        };
        match HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
            Ok(v) => {
                request.headers_mut().insert("authorization", v);
            }
            Err(_) => {
                return (
                    Ended::Failed("the token is not a header value".into()),
                    false,
                );
            }
        }
        let socket = tokio::select! {
            s = tokio::time::timeout(self.v1.request_timeout.0,
                tokio_tungstenite::connect_async(request)) => s,
            e = self.interrupted(holding) => return (e, false),
        };
        let mut socket = match socket {
            Ok(Ok((s, _))) => s,
            Ok(Err(tungstenite::Error::Http(answer))) if answer.status() == 401 => {
                return (Ended::TokenExpired, false);
            }
            Ok(Err(e)) => return (Ended::Failed(e.to_string()), false),
            Err(_) => return (Ended::Failed("connecting timed out".into()), false),
        };
        let subscribe = json!({"type": "subscribe", "channels": self.config.channels,
                               "last_event_id": lease.last_event_id});
        if let Err(e) = socket
            .send(Message::Text(subscribe.to_string().into()))
            .await
        {
            return (Ended::Failed(e.to_string()), false);
        }
        let mut subscribed = false;
        loop {
            let received = tokio::select! {
                m = socket.next() => m,
                e = self.interrupted(holding) => {
                    let _ = socket.close(None).await;
                    return (e, subscribed);
                }
            };
            let text = match received {
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    if code == 4001 {
                        return (Ended::TokenExpired, subscribed);
                    }
                    return (Ended::Closed(code), subscribed);
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return (Ended::Failed(e.to_string()), subscribed),
                None => return (Ended::Closed(u16::from(CloseCode::Abnormal)), subscribed),
            };
            let Ok(event) = serde_json::from_str::<Value>(&text) else {
                tracing::warn!("the stream sent a message that is not JSON; skipped");
                continue;
            };
            match event["type"].as_str() {
                Some("subscribed") => {
                    subscribed = true;
                    self.metrics.connected.set(1);
                    tracing::info!(account = %lease.account, "stream subscribed");
                }
                Some("error") => {
                    tracing::warn!(error = %event["error"], "the stream refused a message");
                }
                Some(kind @ ("new_post" | "new_story" | "notification")) => {
                    self.metrics.events.with_label_values(&[kind]).inc();
                    match self.handle(lease, &event).await {
                        Ok(()) => {}
                        Err(StreamError::LeaseLost(_)) => return (Ended::LeaseLost, subscribed),
                        Err(e) => {
                            // Not recorded as handled: the reconnection replays it.
                            let _ = socket.close(None).await;
                            return (Ended::Failed(e.to_string()), subscribed);
                        }
                    }
                }
                _ => {
                    self.metrics.events.with_label_values(&["other"]).inc();
                }
            }
        }
    }

    /// Queues the jobs the rules make of `event` and records it as handled, in one transaction.
    async fn handle(&self, lease: &mut StreamLease, event: &Value) -> Result<(), StreamError> {
        let Some(event_id) = event["event_id"].as_i64() else {
            tracing::warn!("an event without an event_id; skipped");
            return Ok(());
        };
        if lease.last_event_id.is_some_and(|last| event_id <= last) {
            return Ok(());
        }
        let mut jobs: Vec<NewJob> = Vec::new();
        for spec in jobs_for(&self.config.rules, event, &lease.account) {
            let kind = spec.kind.clone();
            match spec.validate(self.default_max_attempts) {
                Ok(job) => jobs.push(job),
                Err(e) => {
                    tracing::warn!(%kind, error = %e, "a stream rule made an invalid job; skipped");
                    self.metrics
                        .jobs
                        .with_label_values(&[kind.as_str(), "invalid"])
                        .inc();
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        let submitted = Queue::submit_in(&mut tx, &jobs).await?;
        streams::advance(&mut tx, lease, event_id).await?;
        tx.commit().await?;
        lease.last_event_id = Some(event_id);
        for (job, s) in jobs.iter().zip(&submitted) {
            let outcome = if s.created { "created" } else { "duplicate" };
            self.metrics
                .jobs
                .with_label_values(&[job.kind.as_str(), outcome])
                .inc();
        }
        Ok(())
    }
}

/// The wait before reconnection attempt `failures` (1 on the first): doubling from
/// `reconnect_min` up to `reconnect_max`, drawn between half and all of it so a fleet of
/// streams cut at once does not reconnect at once.
fn backoff(config: &StreamConfig, failures: u32) -> Duration {
    let base = config
        .reconnect_min
        .0
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(config.reconnect_max.0);
    base.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// The ids an event names: its post, its user (the poster, or the notification's actor), and the
/// notification's type.
struct EventIds<'a> {
    kind: &'a str,
    post: Option<&'a str>,
    user: Option<&'a str>,
    notification_type: Option<&'a str>,
}

fn ids_of(event: &Value) -> Option<EventIds<'_>> {
    let data = &event["data"];
    let kind = event["type"].as_str()?;
    Some(match kind {
        "new_post" => EventIds {
            kind,
            post: data["post_id"].as_str(),
            user: data["user"]["user_id"].as_str(),
            notification_type: None,
        },
        "new_story" => EventIds {
            kind,
            post: None,
            user: data["user"]["user_id"].as_str(),
            notification_type: None,
        },
        "notification" => EventIds {
            kind,
            post: data["post"]["post_id"].as_str(),
            user: data["actor"]["user_id"].as_str(),
            notification_type: data["type"].as_str(),
        },
        _ => return None,
    })
}

/// The jobs `rules` make of `event` on `account`'s stream, unvalidated.
pub fn jobs_for(rules: &[StreamRule], event: &Value, account: &str) -> Vec<JobSpec> {
    let Some(ids) = ids_of(event) else {
        return Vec::new();
    };
    rules
        .iter()
        .filter(|r| r.event == ids.kind)
        .filter(|r| r.users.is_empty() || ids.user.is_some_and(|u| r.users.iter().any(|w| w == u)))
        .filter(|r| {
            r.notification_types.is_empty()
                || ids
                    .notification_type
                    .is_some_and(|t| r.notification_types.iter().any(|w| w == t))
        })
        .filter_map(|r| {
            let target = match r.target.as_str() {
                "post" => ids.post?,
                "user" => ids.user?,
                _ => account,
            };
            let run_at = (!r.delay.0.is_zero())
                .then(|| chrono::Duration::from_std(r.delay.0).ok())
                .flatten()
                .map(|d| Utc::now() + d);
            Some(JobSpec {
                priority: Some(r.priority),
                run_at,
                options: r.max_items.map(|m| JobOptions {
                    max_items: Some(m),
                    ..JobOptions::default()
                }),
                ..JobSpec::new(r.kind.clone(), target)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use trawl_shared::duration::HumanDuration;

    #[test]
    fn rules_pick_the_events_ids_and_filter_by_user_and_type() {
        let post = json!({"type": "new_post", "event_id": 3,
                          "data": {"post_id": "77", "user": {"user_id": "5"}}});
        let like = json!({"type": "notification", "event_id": 4,
                          "data": {"type": "like", "actor": {"user_id": "6"},
                                   "post": {"post_id": "78"}}});
        let follow = json!({"type": "notification", "event_id": 5,
                            "data": {"type": "follow", "actor": {"user_id": "6"}, "post": null}});
        let rule = StreamRule::new;
        let mut watched = rule("new_post", "v1_user_posts", "user");
        watched.users = vec!["9".into()];
        let mut likes = rule("notification", "v1_post", "post");
        likes.notification_types = vec!["like".into()];
        let rules = vec![
            rule("new_post", "v1_post", "post"),
            watched,
            likes,
            rule("notification", "v1_notifications", "account"),
        ];
        let targets = |e: &Value| -> Vec<(String, String)> {
            jobs_for(&rules, e, "alice")
                .into_iter()
                .map(|j| (j.kind, j.target))
                .collect()
        };
        assert_eq!(targets(&post), vec![("v1_post".into(), "77".into())]);
        assert_eq!(
            targets(&like),
            vec![
                ("v1_post".into(), "78".into()),
                ("v1_notifications".into(), "alice".into())
            ]
        );
        assert_eq!(
            targets(&follow),
            vec![("v1_notifications".into(), "alice".into())]
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let config = StreamConfig {
            reconnect_min: HumanDuration(Duration::from_millis(100)),
            reconnect_max: HumanDuration(Duration::from_secs(1)),
            ..StreamConfig::default()
        };
        for (failures, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let wait = backoff(&config, failures).as_millis() as u64;
            assert!((full / 2..=full).contains(&wait), "{failures}: {wait} ms");
        }
    }
}
