//! The limiter layer against the simulator's own windows: an apalis worker on Trawl's queue
//! crawls more profiles than one window allows, and the simulator's oracle, which counts every
//! request it received, finds no 429 and no window over its cap.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis_trawl::apalis_core::task::data::Data;
use apalis_trawl::apalis_core::worker::builder::WorkerBuilder;
use apalis_trawl::{Config, LimitLayer, TrawlBackend, TrawlJobError, TrawlSink, TrawlTask};
use trawl_shared::config::LimiterConfig;
use trawl_shared::duration::HumanDuration;
use trawl_shared::limiter::metrics::LimiterMetrics;
use trawl_shared::limiter::{Limiter, QueryType, Request};
use trawl_shared::queue::{Queue, QueueSettings};
use trawl_shared::testing::fresh_db;
use trawl_shared::{JobSpec, JobState};
use trawl_simulator::{DataSet, Sim, SimConfig, Sizes};

/// 660 s × 0.01: the `other` window is 6.6 s on both sides, 75 requests in it.
const TIME_SCALE: f64 = 0.01;
/// The ledger's margin after the window, before scaling: 200 ms scaled. The margin is what absorbs
/// the time between a grant and the request reaching the server (a first connection, a busy
/// scheduler). The default 6 s scales to 60 ms, which a two-core machine busy compiling exceeded
/// in one run of three (76 requests in a window); at real scale 6 s covers it many times over.
const MARGIN: Duration = Duration::from_secs(20);
const OTHER_CAP: usize = 75;
const PROFILES: usize = 100;

#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    base: String,
}

async fn profile(task: TrawlTask, http: Data<Http>) -> Result<(), TrawlJobError> {
    let url = format!(
        "{}/api/v1/users/web_profile_info/?username={}",
        http.base, task.target
    );
    let status = http
        .client
        .get(url)
        .send()
        .await
        .map_err(|e| TrawlJobError::Retry(e.to_string()))?
        .status();
    if status.is_success() {
        Ok(())
    } else {
        Err(TrawlJobError::Retry(format!("HTTP {status}")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_layer_keeps_the_simulators_windows() {
    let sim = Sim::new(SimConfig::fault_free(
        DataSet::generate(
            1,
            Sizes {
                users: PROFILES as u32 + 20,
                ..Sizes::default()
            },
        ),
        Vec::new(),
        TIME_SCALE,
    ));
    let usernames: Vec<String> = sim
        .data
        .users
        .iter()
        .take(PROFILES)
        .map(|u| u.username.clone())
        .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the simulator");
    let addr: SocketAddr = listener.local_addr().expect("simulator address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(trawl_simulator::run(listener, sim, async {
        let _ = stopped.await;
    }));
    let base = format!("http://{addr}");

    let db = fresh_db().await;
    let queue = Queue::new(
        db.pool.clone(),
        QueueSettings {
            poll_interval: Duration::from_millis(100),
            ..QueueSettings::default()
        },
    );
    let specs = usernames
        .iter()
        .map(|u| {
            serde_json::from_value::<JobSpec>(serde_json::json!({"kind": "profile", "target": u}))
                .expect("a job specification")
        })
        .collect();
    TrawlSink::new(queue.clone())
        .push_many(specs)
        .await
        .expect("submit profile jobs");

    let limits = LimiterConfig {
        time_scale: TIME_SCALE,
        per_type_margin: HumanDuration(MARGIN),
        pacing_burst: 100,
        pacing_period: Some(HumanDuration(Duration::from_micros(100))),
        pacing_jitter: HumanDuration(Duration::ZERO),
        ..LimiterConfig::default()
    };
    let limiter = Arc::new(Limiter::new(
        db.pool.clone(),
        &limits,
        Arc::new(LimiterMetrics::new().expect("limiter metrics")),
    ));
    let started = Instant::now();
    let worker = WorkerBuilder::new("sim-profiles")
        .backend(TrawlBackend::<TrawlTask>::new(
            queue.clone(),
            Config::default()
                .batch_size(4)
                .poll_interval(Duration::from_millis(50)),
        ))
        .data(Http {
            client: reqwest::Client::new(),
            base: base.clone(),
        })
        .layer(LimitLayer::new(
            limiter,
            Duration::from_millis(100),
            |_: &TrawlTask| Request {
                query_type: QueryType::Other,
                account: "anonymous".into(),
                egress: None,
            },
        ))
        .build(profile);
    let worker = tokio::spawn(worker.run());

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let completed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'completed'")
                .fetch_one(&db.pool)
                .await
                .expect("counting completed jobs");
        if completed as usize == PROFILES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{completed} of {PROFILES} completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    worker.abort();

    let oracle: serde_json::Value = reqwest::get(format!("{base}/__sim/oracle"))
        .await
        .expect("oracle request")
        .json()
        .await
        .expect("oracle answer");
    let _ = stop.send(());
    let _ = served.await;

    assert_eq!(oracle["responses_429"], 0, "{oracle}");
    assert_eq!(
        oracle["requests"], PROFILES,
        "one request per job: {oracle}"
    );
    let peaks = oracle["peaks"].as_array().expect("peaks");
    let other = peaks
        .iter()
        .find(|p| p["key"] == "other")
        .expect("the other window was used");
    assert_eq!(other["cap"], OTHER_CAP);
    for peak in peaks {
        assert!(
            peak["most"].as_u64() <= peak["cap"].as_u64(),
            "window over its cap: {peak}"
        );
    }
    // More profiles than one window allows: the rest had to wait for the next window.
    assert!(
        elapsed >= Duration::from_secs_f64(660.0 * TIME_SCALE),
        "{PROFILES} profiles in {elapsed:?}, inside one window"
    );
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state <> $1")
        .bind(JobState::Completed)
        .fetch_one(&db.pool)
        .await
        .expect("counting unfinished jobs");
    assert_eq!(failed, 0);
}
