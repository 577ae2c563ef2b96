//! The Instagram simulator: an Instagram-compatible HTTP server with a deterministic data set,
//! server-side sliding windows and an audit log of every request, so that Trawl is tested,
//! demonstrated and benchmarked without the internet.
//!
//! It must not import anything from `trawl-shared`: it is an independent oracle for the client,
//! with its own windows, its own wire format and its own notion of time.
//!
//! What it serves (see docs/simulator.md): a deterministic data set (`data`), Instagram's web,
//! GraphQL (`query_hash` and `doc_id`) and mobile endpoints with login, two-factor and checkpoint
//! flows (`server`), an Instagram-style v1 REST API with its realtime stream (`v1`), per-account and per-IP sliding
//! windows answering Instagram's 429 (`windows`), fault injection (`faults`), the audit log with
//! its window oracle (`audit`), and a CDN serving the media those answers link to (`cdn`).

pub mod audit;
pub mod cdn;
pub mod data;
pub mod faults;
pub mod server;
pub mod v1;
pub mod windows;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use data::{DataSet, Sizes};
pub use server::{Sim, SimConfig};

/// Serves the simulator on `listener` until `shutdown` resolves. Media URLs point at the
/// listener's address unless the configuration names a CDN base (see [`Sim::adopt_served_address`]).
pub async fn run(
    listener: TcpListener,
    sim: Arc<Sim>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    sim.adopt_served_address(listener.local_addr()?);
    // The activity generator lives as long as the server: dropping the guard stops it.
    let _activity = sim
        .v1
        .activity_period
        .map(|period| AbortOnDrop(tokio::spawn(crate::v1::run_activity(sim.clone(), period))));
    axum::serve(
        listener,
        server::router(sim).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// A simulator served on a port of 127.0.0.1 by a task of the current runtime (tests, embedding).
/// Dropping it stops the server.
pub struct Background {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub sim: Arc<Sim>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts serving `sim` on a free local port.
pub async fn serve_in_background(sim: Arc<Sim>) -> std::io::Result<Background> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = sim.clone();
    tokio::spawn(async move {
        let outcome = run(listener, served, async {
            let _ = stopped.await;
        })
        .await;
        if let Err(e) = outcome {
            tracing::error!(error = %e, "the simulator stopped serving");
        }
    });
    Ok(Background {
        base,
        sim,
        _stop: stop,
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
