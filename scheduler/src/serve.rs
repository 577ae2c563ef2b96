//! The scheduler's HTTP server: the axum router on hyper's HTTP/1.1 connections, with the
//! deadline `axum::serve` does not set. A client gets `scheduler.header_timeout` to send a
//! request's head (and an idle keep-alive connection as long to start the next one); after that
//! the connection is closed, so slow or silent clients cannot hold connections open. The body has
//! its own deadline, answered with 408 by the JSON extractor (`api::JsonBody`).

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use trawl_shared::shutdown::Shutdown;

/// Serves `app` until `shutdown`; then stops accepting, lets requests in flight finish and
/// returns when every connection has closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    // Every connection task holds a receiver; the server is done when all are dropped.
    let (open_tx, open_rx) = watch::channel(());
    let stop = shutdown.clone().wait();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let stop = shutdown.wait();
            tokio::pin!(stop);
            let finished = tokio::select! {
                finished = connection.as_mut() => finished,
                _ = &mut stop => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = finished {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}
