//! A TCP proxy of the test's own between Trawl's processes and PostgreSQL that can partition the
//! network: while cut, no byte passes in either direction on any connection, old or new, and
//! nothing is closed (as when a link or a switch fails, not a server). When healed, the held bytes
//! flow on and new connections reach the server again.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Partition {
    pub port: u16,
    cut: Arc<watch::Sender<bool>>,
    accept: JoinHandle<()>,
}

impl Partition {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let cut = Arc::new(watch::Sender::new(false));
        let gate = cut.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let gate = gate.subscribe();
                tokio::spawn(forward(client, upstream, gate));
            }
        });
        Self { port, cut, accept }
    }

    /// Stops every byte, in both directions, until [`Partition::heal`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn open(gate: &mut watch::Receiver<bool>) {
    // An error means the proxy is gone; the connection then ends with the runtime.
    let _ = gate.wait_for(|cut| !*cut).await;
}

async fn forward(client: TcpStream, upstream: SocketAddr, mut gate: watch::Receiver<bool>) {
    // A connection opened during the partition waits, unanswered, like a SYN into a dead link.
    open(&mut gate).await;
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, gate.clone());
    let down = pump(server_read, client_write, gate);
    // Either side closing ends both directions, as a TCP connection does.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        open(&mut gate).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just as the link failed are held until it heals, never dropped.
        open(&mut gate).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
