//! The route an account's requests take: straight out of this machine, or through the account's
//! forward proxy (docs/proxies.md).
//!
//! Every HTTP client of a held account (Instagram, media) is built here, so no request of a
//! proxied account can leave by another way: a client with a proxy never falls back to a direct
//! connection, and a client without one ignores `HTTP_PROXY` and friends, so the route is what the
//! database says and nothing else.
//!
//! It also tells a proxy's own failures (refused, timed out, 407, a 5xx the proxy wrote itself)
//! from Instagram's, because they call for another response: the account is fine, its exit is
//! not, and every account behind that exit rests until the proxy is checked again.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use reqwest::header::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trawl_shared::proxies::{ProxyRoute, ProxyScheme};

/// Why a proxy could not carry a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyFailure {
    /// No connection to the proxy, or the proxy could not connect onwards.
    Refused(String),
    TimedOut,
    /// The proxy wants (other) credentials: 407, or a SOCKS authentication refused.
    AuthRequired,
    /// The proxy answered with an error of its own.
    ProxyError(String),
}

impl ProxyFailure {
    /// The `reason` label of `trawl_proxy_failures_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ProxyFailure::Refused(_) => "refused",
            ProxyFailure::TimedOut => "timed_out",
            ProxyFailure::AuthRequired => "auth_required",
            ProxyFailure::ProxyError(_) => "proxy_error",
        }
    }

    pub const LABELS: [&'static str; 4] = ["refused", "timed_out", "auth_required", "proxy_error"];
}

impl fmt::Display for ProxyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyFailure::Refused(why) => write!(f, "cannot get through the proxy: {why}"),
            ProxyFailure::TimedOut => f.write_str("the proxy did not answer in time"),
            ProxyFailure::AuthRequired => {
                f.write_str("the proxy refused its credentials (407 Proxy Authentication Required)")
            }
            ProxyFailure::ProxyError(why) => write!(f, "the proxy failed: {why}"),
        }
    }
}

/// A client builder whose requests take `route` and only `route`.
pub fn client_builder(
    route: Option<&ProxyRoute>,
) -> Result<reqwest::ClientBuilder, reqwest::Error> {
    let builder = reqwest::Client::builder();
    let Some(route) = route else {
        return Ok(builder.no_proxy());
    };
    let proxy = match route.url.scheme {
        ProxyScheme::Http => {
            let proxy = reqwest::Proxy::all(route.url.to_string())?;
            match (&route.username, &route.password) {
                (Some(user), password) => {
                    proxy.basic_auth(user, password.as_deref().unwrap_or_default())
                }
                _ => proxy,
            }
        }
        // reqwest takes SOCKS credentials from the URL only.
        ProxyScheme::Socks5 | ProxyScheme::Socks5h => {
            let credentials = match (&route.username, &route.password) {
                (Some(user), password) => format!(
                    "{}:{}@",
                    percent_encode(user),
                    percent_encode(password.as_deref().unwrap_or_default())
                ),
                _ => String::new(),
            };
            reqwest::Proxy::all(format!(
                "{}://{credentials}{}:{}",
                route.url.scheme.as_str(),
                route.url.host,
                route.url.port
            ))?
        }
    };
    Ok(builder.proxy(proxy))
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The proxy's failure behind a request that got no answer, when it went through a proxy and
/// never reached the far side. An error after the connection was made (a body cut short) is not
/// the proxy's: the server or the network in between may have dropped it.
pub fn failure_of_error(route: Option<&ProxyRoute>, e: &reqwest::Error) -> Option<ProxyFailure> {
    route?;
    if !e.is_connect() {
        return None;
    }
    if e.is_timeout() {
        return Some(ProxyFailure::TimedOut);
    }
    // The error's own text names the URL, whose query can hold a cursor: only its causes.
    let mut why = String::from("cannot connect");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        why = format!("{why}: {s}");
        source = s.source();
    }
    Some(ProxyFailure::Refused(why.chars().take(300).collect()))
}

/// The proxy's failure behind an answer, when the proxy rather than the server wrote it: a 407
/// (Instagram never asks for proxy credentials), or a 401, 502, 503 or 504 that names the proxy as
/// its source (`Proxy-Status`, RFC 9209; Squid's `X-Squid-Error`; a proxy's own `Server`
/// header). The 401: tinyproxy 1.11 answers a wrong password with it, not 407.
pub fn failure_of_answer(
    route: Option<&ProxyRoute>,
    status: u16,
    headers: &HeaderMap,
) -> Option<ProxyFailure> {
    route?;
    if status == 407 {
        return Some(ProxyFailure::AuthRequired);
    }
    if status != 401 && !(502..=504).contains(&status) {
        return None;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let from_proxy = header("proxy-status").is_some()
        || header("x-squid-error").is_some()
        || header("server").is_some_and(|s| {
            let s = s.to_ascii_lowercase();
            s.starts_with("tinyproxy") || s.starts_with("squid")
        });
    from_proxy.then(|| {
        if status == 401 {
            ProxyFailure::AuthRequired
        } else {
            ProxyFailure::ProxyError(format!("status {status} from the proxy"))
        }
    })
}

/// Checks that `route` can reach `target` (`scheme://host[:port]`, Instagram's base URL) by
/// opening a tunnel to it and closing it again. Nothing is sent through the tunnel, so the check
/// is not a request to Instagram and counts against no window.
pub async fn check(
    route: &ProxyRoute,
    target: &str,
    timeout: Duration,
) -> Result<(), ProxyFailure> {
    let (host, port) = host_and_port(target).ok_or_else(|| {
        ProxyFailure::ProxyError(format!("cannot read host and port of {target}"))
    })?;
    match tokio::time::timeout(timeout, open_tunnel(route, &host, port)).await {
        Err(_) => Err(ProxyFailure::TimedOut),
        Ok(result) => result,
    }
}

fn host_and_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

async fn open_tunnel(route: &ProxyRoute, host: &str, port: u16) -> Result<(), ProxyFailure> {
    let proxy = format!(
        "{}:{}",
        route.url.host.trim_matches(['[', ']']),
        route.url.port
    );
    let mut stream = TcpStream::connect(&proxy)
        .await
        .map_err(|e| ProxyFailure::Refused(format!("{proxy}: {e}")))?;
    let io = |e: std::io::Error| ProxyFailure::Refused(format!("{proxy}: {e}"));
    match route.url.scheme {
        ProxyScheme::Http => {
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
            if let Some(user) = &route.username {
                let pair = format!("{user}:{}", route.password.as_deref().unwrap_or_default());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                request.push_str(&format!("Proxy-Authorization: Basic {encoded}\r\n"));
            }
            request.push_str("\r\n");
            stream.write_all(request.as_bytes()).await.map_err(io)?;
            let head = read_head(&mut stream).await.map_err(io)?;
            let status_line = head.lines().next().unwrap_or_default().to_owned();
            let status: Option<u16> = status_line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok());
            match status {
                Some(200..=299) => Ok(()),
                // A CONNECT is the proxy's alone to answer: 401 is tinyproxy's refusal.
                Some(401 | 407) => Err(ProxyFailure::AuthRequired),
                _ => Err(ProxyFailure::ProxyError(format!(
                    "CONNECT answered {:?}",
                    status_line.chars().take(100).collect::<String>()
                ))),
            }
        }
        ProxyScheme::Socks5 | ProxyScheme::Socks5h => {
            socks5_connect(&mut stream, route, host, port)
                .await
                .map_err(|e| match e {
                    SocksStep::Io(e) => io(e),
                    SocksStep::Refused(why) => ProxyFailure::Refused(why),
                    SocksStep::Auth => ProxyFailure::AuthRequired,
                    SocksStep::Protocol(why) => ProxyFailure::ProxyError(why),
                })
        }
    }
}

/// Reads an HTTP response head (up to the blank line), at most 8 KiB.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

enum SocksStep {
    Io(std::io::Error),
    Refused(String),
    Auth,
    Protocol(String),
}

impl From<std::io::Error> for SocksStep {
    fn from(e: std::io::Error) -> Self {
        SocksStep::Io(e)
    }
}

/// A SOCKS5 handshake and CONNECT (RFC 1928; username and password by RFC 1929).
async fn socks5_connect(
    stream: &mut TcpStream,
    route: &ProxyRoute,
    host: &str,
    port: u16,
) -> Result<(), SocksStep> {
    const USER_PASSWORD: u8 = 2;
    let method = if route.username.is_some() {
        USER_PASSWORD
    } else {
        0
    };
    stream.write_all(&[5, 1, method]).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    if choice[0] != 5 {
        return Err(SocksStep::Protocol("not a SOCKS5 proxy".into()));
    }
    if choice[1] == 0xff {
        return Err(SocksStep::Auth);
    }
    if choice[1] == USER_PASSWORD {
        let user = route.username.as_deref().unwrap_or_default().as_bytes();
        let password = route.password.as_deref().unwrap_or_default().as_bytes();
        let (Ok(ulen), Ok(plen)) = (u8::try_from(user.len()), u8::try_from(password.len())) else {
            return Err(SocksStep::Protocol(
                "credentials longer than SOCKS5 allows".into(),
            ));
        };
        let mut message = vec![1, ulen];
        message.extend_from_slice(user);
        message.push(plen);
        message.extend_from_slice(password);
        stream.write_all(&message).await?;
        let mut verdict = [0u8; 2];
        stream.read_exact(&mut verdict).await?;
        if verdict[1] != 0 {
            return Err(SocksStep::Auth);
        }
    }
    let Ok(hlen) = u8::try_from(host.len()) else {
        return Err(SocksStep::Protocol("host name too long".into()));
    };
    let mut request = vec![5, 1, 0, 3, hlen];
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await?;
    match reply[1] {
        0 => Ok(()),
        code => Err(SocksStep::Refused(format!(
            "the SOCKS proxy could not connect onwards (reply {code})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_give_their_host_and_port() {
        assert_eq!(
            host_and_port("https://www.instagram.com"),
            Some(("www.instagram.com".into(), 443))
        );
        assert_eq!(
            host_and_port("http://127.0.0.1:8080/mobile"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(host_and_port("http://[::1]:81"), Some(("::1".into(), 81)));
        assert_eq!(host_and_port("nonsense"), None);
    }

    #[test]
    fn only_answers_the_proxy_wrote_are_its_failures() {
        let route = ProxyRoute {
            name: "p".into(),
            url: "http://127.0.0.1:1".parse().expect("url"),
            username: None,
            password: None,
        };
        let mut headers = HeaderMap::new();
        assert_eq!(
            failure_of_answer(Some(&route), 407, &headers),
            Some(ProxyFailure::AuthRequired)
        );
        assert_eq!(failure_of_answer(Some(&route), 502, &headers), None);
        assert_eq!(failure_of_answer(None, 407, &headers), None);
        headers.insert("server", "tinyproxy/1.11.1".parse().expect("header"));
        assert!(matches!(
            failure_of_answer(Some(&route), 502, &headers),
            Some(ProxyFailure::ProxyError(_))
        ));
        assert_eq!(failure_of_answer(Some(&route), 500, &headers), None);
    }

    #[test]
    fn socks_credentials_are_escaped_in_the_url() {
        assert_eq!(percent_encode("a b:c@d"), "a%20b%3Ac%40d");
    }
}
