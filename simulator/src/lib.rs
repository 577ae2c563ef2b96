//! The Instagram simulator: an Instagram-compatible HTTP server with a deterministic data set,
//! server-side sliding windows and an audit log of every request, so that Trawl is tested,
//! demonstrated and benchmarked without the internet.
//!
//! It must not import anything from `trawl-shared`: it is an independent oracle for the client,
//! with its own windows, its own wire format and its own notion of time.
//!
//! Built so far (issue 4, in progress): the data set (users, follow graph, posts with sidecars,
//! videos, captions, locations and tagged users, comments), the web login flow with CSRF, web
//! profile info, GraphQL by `query_hash` for profile posts, comments, followers and followees with
//! cursor pagination, per-account and per-IP windows with Instagram's 429, and the audit log with
//! its window oracle. Still to come: doc_id and mobile endpoints, hashtags, stories, highlights,
//! the v1 REST API of the API-design seed, and fault injection.

pub mod audit;
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

/// Serves the simulator on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    sim: Arc<Sim>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        server::router(sim).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
