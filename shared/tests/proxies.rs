//! The test proxies (`trawl_shared::testing::proxy`) against a target on 127.0.0.1 that answers
//! with the peer address it saw: each proxy's traffic arrives from its own exit address, wrong
//! credentials are refused before anything reaches the target, the target learns nothing of the
//! client, a killed proxy refuses connections until restarted, and the bare CONNECT and SOCKS5
//! handshakes the worker probes proxies with work to any port.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trawl_shared::testing::proxy::{ForwardProxy, ProxyKind};

const USER: &str = "crawler";
const PASSWORD: &str = "s3cret-pass";
const EXIT_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const EXIT_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// An HTTP server on 127.0.0.1 that answers every request with the peer address it saw and the
/// request head it received, and counts the requests; stopped on drop.
struct Target {
    port: u16,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// What the target saw of one request.
struct Seen {
    peer: IpAddr,
    head: String,
}

impl Target {
    async fn start() -> Target {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the target");
        let port = listener.local_addr().expect("target address").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                tokio::spawn(answer(stream, peer.ip(), counted.clone()));
            }
        });
        Target {
            port,
            requests,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/seen", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream, peer: IpAddr, requests: Arc<AtomicUsize>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let body = format!("{peer}\n{}", String::from_utf8_lossy(&head));
    // Two Set-Cookie lines, as a login answer has: a proxy must pass both.
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: first=1\r\n\
         Set-Cookie: second=2\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn parse_seen(body: &str) -> Seen {
    let (peer, head) = body.split_once('\n').expect("the target's answer");
    Seen {
        peer: peer.parse().expect("a peer address"),
        head: head.to_owned(),
    }
}

fn start(kind: ProxyKind, exit: Ipv4Addr, credentials: Option<(&str, &str)>) -> ForwardProxy {
    ForwardProxy::start(kind, exit, credentials).expect("start the proxy")
}

/// A client through `proxy`, as the worker would make one: HTTP proxy credentials as Basic auth,
/// SOCKS5 ones in the URL. No pooled connections, so that each request opens its own through
/// the proxy (a pooled one would outlive a killed proxy and fail otherwise than at connect).
fn client(proxy: &ForwardProxy, credentials: Option<(&str, &str)>) -> reqwest::Client {
    let reqwest_proxy = match (proxy.url().split_once("://"), credentials) {
        (Some(("socks5h", address)), Some((user, password))) => {
            reqwest::Proxy::all(format!("socks5h://{user}:{password}@{address}"))
        }
        (_, Some((user, password))) => {
            reqwest::Proxy::all(proxy.url()).map(|p| p.basic_auth(user, password))
        }
        (_, None) => reqwest::Proxy::all(proxy.url()),
    }
    .expect("a proxy URL reqwest takes");
    reqwest::Client::builder()
        .proxy(reqwest_proxy)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build the client")
}

async fn get(client: &reqwest::Client, target: &Target) -> Result<Seen, reqwest::Error> {
    let response = client.get(target.url()).send().await?.error_for_status()?;
    Ok(parse_seen(&response.text().await?))
}

#[tokio::test]
async fn each_proxy_reaches_the_target_from_its_own_exit_address() {
    let target = Target::start().await;
    let direct = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build the client");
    let seen = get(&direct, &target).await.expect("a direct request");
    assert_eq!(seen.peer, IpAddr::V4(Ipv4Addr::LOCALHOST));

    for kind in [ProxyKind::Http, ProxyKind::Socks5] {
        let open = start(kind, EXIT_A, None);
        let locked = start(kind, EXIT_B, Some((USER, PASSWORD)));
        assert_ne!(open.port(), locked.port());
        assert!(!locked.url().contains(USER), "{}", locked.url());

        let seen = get(&client(&open, None), &target)
            .await
            .unwrap_or_else(|e| panic!("{kind:?} without credentials: {e:?}"));
        assert_eq!(seen.peer, IpAddr::V4(open.exit()), "{kind:?}");
        let seen = get(&client(&locked, Some((USER, PASSWORD))), &target)
            .await
            .unwrap_or_else(|e| panic!("{kind:?} with credentials: {e:?}"));
        assert_eq!(seen.peer, IpAddr::V4(locked.exit()), "{kind:?}");
    }
    assert_eq!(target.requests(), 5);
}

#[tokio::test]
async fn squid_refuses_a_wrong_or_missing_password_before_the_target() {
    let target = Target::start().await;
    let proxy = start(ProxyKind::Http, EXIT_A, Some((USER, PASSWORD)));

    let response = client(&proxy, Some((USER, "wrong")))
        .get(target.url())
        .send()
        .await
        .expect("squid answers a wrong password");
    assert_eq!(response.status().as_u16(), 407);
    let response = client(&proxy, None)
        .get(target.url())
        .send()
        .await
        .expect("squid answers a missing password");
    assert_eq!(response.status().as_u16(), 407);
    assert!(response.headers().contains_key("proxy-authenticate"));
    assert_eq!(target.requests(), 0);
}

#[tokio::test]
async fn microsocks_refuses_a_wrong_or_missing_password_before_the_target() {
    let target = Target::start().await;
    let proxy = start(ProxyKind::Socks5, EXIT_B, Some((USER, PASSWORD)));

    for credentials in [Some((USER, "wrong")), None] {
        let error = get(&client(&proxy, credentials), &target)
            .await
            .err()
            .unwrap_or_else(|| panic!("{credentials:?} went through"));
        assert!(error.is_connect(), "{credentials:?}: {error:?}");
    }
    assert_eq!(target.requests(), 0);
}

#[tokio::test]
async fn squid_tells_the_target_nothing_about_the_client() {
    let target = Target::start().await;
    let proxy = start(ProxyKind::Http, EXIT_A, Some((USER, PASSWORD)));
    let seen = get(&client(&proxy, Some((USER, PASSWORD))), &target)
        .await
        .expect("a request through squid");
    let headers: Vec<(String, String)> = seen
        .head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    for revealing in [
        "x-forwarded-for",
        "forwarded",
        "via",
        "x-real-ip",
        "client-ip",
        "x-squid-error",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            !headers.iter().any(|(name, _)| name == revealing),
            "{revealing} reached the target:\n{}",
            seen.head
        );
    }
    // Under any other name either: the client's address appears in no header but the target's
    // own Host.
    assert!(
        headers
            .iter()
            .all(|(name, value)| name == "host" || !value.contains("127.0.0.1")),
        "{}",
        seen.head
    );
}

#[tokio::test]
async fn a_killed_proxy_refuses_connections_until_restarted() {
    let target = Target::start().await;
    for (kind, exit) in [(ProxyKind::Http, EXIT_A), (ProxyKind::Socks5, EXIT_B)] {
        let mut proxy = start(kind, exit, Some((USER, PASSWORD)));
        let port = proxy.port();
        let client = client(&proxy, Some((USER, PASSWORD)));
        get(&client, &target)
            .await
            .unwrap_or_else(|e| panic!("{kind:?} before the kill: {e:?}"));

        // A tunnel open across the kill: it breaks, and the killed proxy's end of it lingers
        // (FIN_WAIT, then TIME_WAIT) on the port that the restart binds again.
        let mut tunnel = match kind {
            ProxyKind::Http => {
                let (stream, status) =
                    connect_tunnel(&proxy, &target, Some((USER, PASSWORD))).await;
                assert!(status.contains(" 200 "), "{status}");
                stream
            }
            ProxyKind::Socks5 => socks5_connect(&proxy, &target, Some((USER, PASSWORD)))
                .await
                .expect("a SOCKS5 tunnel"),
        };

        proxy.kill();
        let mut byte = [0u8; 1];
        let read = tunnel.read(&mut byte).await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "{kind:?}: the tunnel outlived the proxy: {read:?}"
        );
        drop(tunnel);
        let error = get(&client, &target)
            .await
            .err()
            .unwrap_or_else(|| panic!("{kind:?}: a request went through a killed proxy"));
        assert!(error.is_connect(), "{kind:?}: {error:?}");
        let refused = TcpStream::connect(("127.0.0.1", port))
            .await
            .err()
            .unwrap_or_else(|| panic!("{kind:?}: the killed proxy's port accepted"));
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

        proxy.restart().expect("restart the proxy");
        assert_eq!(proxy.port(), port);
        let seen = get(&client, &target)
            .await
            .unwrap_or_else(|e| panic!("{kind:?} after the restart: {e:?}"));
        assert_eq!(seen.peer, IpAddr::V4(exit), "{kind:?}");
    }
}

/// Sends `GET /tunnel` down an established tunnel and returns what the target saw.
async fn get_through_tunnel(stream: &mut TcpStream, target: &Target) -> Seen {
    let request = format!(
        "GET /tunnel HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        target.port
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send through the tunnel");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read through the tunnel");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    parse_seen(body)
}

/// A bare `CONNECT` to the target, as the worker's probe sends it; returns the stream and the
/// proxy's status line.
async fn connect_tunnel(
    proxy: &ForwardProxy,
    target: &Target,
    credentials: Option<(&str, &str)>,
) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .expect("connect to squid");
    let mut request = format!(
        "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n",
        port = target.port
    );
    if let Some((user, password)) = credentials {
        request.push_str(&format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send CONNECT");
    // Read the answer's head byte by byte, so that nothing of the tunnel is consumed with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = stream.read_u8().await.expect("read the CONNECT answer");
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status_line = head.lines().next().unwrap_or_default().to_owned();
    (stream, status_line)
}

#[tokio::test]
async fn squid_tunnels_a_bare_connect_to_any_port() {
    let target = Target::start().await;
    assert_ne!(target.port, 443);
    let proxy = start(ProxyKind::Http, EXIT_A, Some((USER, PASSWORD)));

    let (mut tunnel, status) = connect_tunnel(&proxy, &target, Some((USER, PASSWORD))).await;
    assert!(status.contains(" 200 "), "{status}");
    let seen = get_through_tunnel(&mut tunnel, &target).await;
    assert_eq!(seen.peer, IpAddr::V4(EXIT_A));
    assert!(seen.head.starts_with("GET /tunnel "), "{}", seen.head);

    let (_, status) = connect_tunnel(&proxy, &target, Some((USER, "wrong"))).await;
    assert!(status.contains(" 407 "), "{status}");
    let (_, status) = connect_tunnel(&proxy, &target, None).await;
    assert!(status.contains(" 407 "), "{status}");
    assert_eq!(target.requests(), 1);
}

/// A bare SOCKS5 handshake (RFC 1928, user/password per RFC 1929) to the target; returns the
/// stream once the CONNECT succeeded, or the step that failed.
async fn socks5_connect(
    proxy: &ForwardProxy,
    target: &Target,
    credentials: Option<(&str, &str)>,
) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let method = if credentials.is_some() { 0x02 } else { 0x00 };
    stream
        .write_all(&[0x05, 0x01, method])
        .await
        .map_err(|e| format!("greeting: {e}"))?;
    let mut choice = [0u8; 2];
    stream
        .read_exact(&mut choice)
        .await
        .map_err(|e| format!("method choice: {e}"))?;
    if choice != [0x05, method] {
        return Err(format!("method refused: {choice:?}"));
    }
    if let Some((user, password)) = credentials {
        let mut auth = vec![0x01, user.len() as u8];
        auth.extend_from_slice(user.as_bytes());
        auth.push(password.len() as u8);
        auth.extend_from_slice(password.as_bytes());
        stream
            .write_all(&auth)
            .await
            .map_err(|e| format!("auth: {e}"))?;
        let mut status = [0u8; 2];
        stream
            .read_exact(&mut status)
            .await
            .map_err(|e| format!("auth status: {e}"))?;
        if status[1] != 0x00 {
            return Err(format!("auth refused: {status:?}"));
        }
    }
    let port = target.port.to_be_bytes();
    stream
        .write_all(&[0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, port[0], port[1]])
        .await
        .map_err(|e| format!("connect request: {e}"))?;
    let mut reply = [0u8; 10];
    stream
        .read_exact(&mut reply)
        .await
        .map_err(|e| format!("connect reply: {e}"))?;
    if reply[..2] != [0x05, 0x00] || reply[3] != 0x01 {
        return Err(format!("connect refused: {reply:?}"));
    }
    Ok(stream)
}

#[tokio::test]
async fn microsocks_tunnels_a_bare_socks5_connect() {
    let target = Target::start().await;
    let proxy = start(ProxyKind::Socks5, EXIT_B, Some((USER, PASSWORD)));

    let mut tunnel = socks5_connect(&proxy, &target, Some((USER, PASSWORD)))
        .await
        .expect("a SOCKS5 CONNECT with the password");
    let seen = get_through_tunnel(&mut tunnel, &target).await;
    assert_eq!(seen.peer, IpAddr::V4(EXIT_B));

    let refused = socks5_connect(&proxy, &target, Some((USER, "wrong")))
        .await
        .expect_err("a wrong password refused");
    assert!(refused.starts_with("auth"), "{refused}");
    let refused = socks5_connect(&proxy, &target, None)
        .await
        .expect_err("no password refused");
    assert!(refused.starts_with("method"), "{refused}");
    assert_eq!(target.requests(), 1);
}

#[tokio::test]
async fn repeated_answer_headers_arrive_whole_through_both_kinds() {
    let target = Target::start().await;
    for (kind, exit) in [(ProxyKind::Http, EXIT_A), (ProxyKind::Socks5, EXIT_B)] {
        let proxy = start(kind, exit, None);
        let response = client(&proxy, None)
            .get(target.url())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e:?}"));
        let cookies: Vec<&str> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(cookies, ["first=1", "second=2"], "{kind:?}");
    }
}
