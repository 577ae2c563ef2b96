//! One account's cookies, the headers the mobile API asks to have sent back, and the forms
//! Instagram's clients derive from them (the `rur` header, the mobile bearer token).

use std::collections::BTreeMap;

use base64::Engine;
use reqwest::header::HeaderMap;

use super::WebTokens;

/// One account's cookies and the headers the mobile API asked to have sent back.
#[derive(Clone, Default)]
pub struct Session {
    cookies: BTreeMap<String, String>,
    pub(super) ig_set: BTreeMap<String, String>,
    pub(super) pigeon_session_id: String,
    /// The start page's tokens for `api/graphql`, fetched once per session as the web app does.
    pub(super) web_tokens: Option<WebTokens>,
}

/// Cookie names only: their values are secrets.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("cookies", &self.cookies.keys().collect::<Vec<_>>())
            .field("ig_set", &self.ig_set.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Session {
    /// From the stored form: `name=value` pairs joined by `; `.
    pub fn from_cookie_string(stored: &str) -> Self {
        let cookies = stored
            .split(';')
            .filter_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
            })
            .collect();
        Self {
            cookies,
            ..Self::default()
        }
    }

    pub fn to_cookie_string(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn is_logged_in(&self) -> bool {
        self.cookies.get("sessionid").is_some_and(|s| !s.is_empty())
    }

    pub fn user_id(&self) -> Option<&str> {
        self.cookies.get("ds_user_id").map(String::as_str)
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// Forgets the login (an expired session), keeping nothing that could be replayed.
    pub fn clear(&mut self) {
        self.cookies.clear();
        self.ig_set.clear();
        self.web_tokens = None;
    }

    /// The mobile API's `authorization` value for a logged-in session, derived from its cookies
    /// as the app does: `Bearer IGT:2:` and the base64 of `{"ds_user_id":…,"sessionid":…}`.
    pub fn bearer_token(&self) -> Option<String> {
        let user = self.user_id()?;
        let session = self.cookie("sessionid").filter(|s| !s.is_empty())?;
        let payload = serde_json::json!({"ds_user_id": user, "sessionid": session}).to_string();
        Some(format!(
            "Bearer IGT:2:{}",
            base64::engine::general_purpose::STANDARD.encode(payload)
        ))
    }

    pub(super) fn absorb(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let first = text.split(';').next().unwrap_or("");
            if let Some((k, v)) = first.trim().split_once('=') {
                let expired = text.to_ascii_lowercase().contains("max-age=0");
                if v.is_empty() || v == "\"\"" || expired {
                    self.cookies.remove(k.trim());
                } else {
                    self.cookies.insert(k.trim().to_owned(), v.to_owned());
                }
            }
        }
        for (name, value) in headers {
            let name = name.as_str();
            let sent_as = if let Some(rest) = name.strip_prefix("ig-set-") {
                rest.to_owned()
            } else if let Some(rest) = name.strip_prefix("x-ig-set-") {
                format!("x-ig-{rest}")
            } else {
                continue;
            };
            if let Ok(v) = value.to_str() {
                self.ig_set.insert(sent_as, v.to_owned());
            }
        }
    }

    pub(super) fn cookie_header(&self, skip: &[&str]) -> Option<String> {
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }
}

/// The `rur` cookie as the app sends it in `ig-u-rur`: unquoted, with `\ooo` octal escapes (how
/// Python's cookie jar writes `,`) decoded.
pub fn decode_rur(raw: &str) -> String {
    let unquoted = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    let bytes = unquoted.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let octal = bytes
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
                .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
            if let Some(b) = octal {
                out.push(b);
                i += 4;
                continue;
            }
            if let Some(&next) = bytes.get(i + 1) {
                out.push(next);
                i += 2;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn the_bearer_token_carries_the_user_and_session() {
        let s = Session::from_cookie_string("sessionid=abc; ds_user_id=42");
        let token = s.bearer_token().expect("logged in");
        let encoded = token.strip_prefix("Bearer IGT:2:").expect("prefix");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        assert_eq!(decoded, br#"{"ds_user_id":"42","sessionid":"abc"}"#);
        assert!(
            Session::from_cookie_string("csrftoken=t")
                .bearer_token()
                .is_none()
        );
    }

    #[test]
    fn rur_is_unquoted_and_unescaped() {
        assert_eq!(
            decode_rur("\"NAO\\054123\\0541790000000:01f7\""),
            "NAO,123,1790000000:01f7"
        );
        assert_eq!(decode_rur("plain"), "plain");
        assert_eq!(decode_rur("\"a\\\"b\""), "a\"b");
    }

    #[test]
    fn sessions_round_trip_and_know_their_user() {
        let s = Session::from_cookie_string("sessionid=abc; ds_user_id=42; csrftoken=t");
        assert!(s.is_logged_in());
        assert_eq!(s.user_id(), Some("42"));
        let again = Session::from_cookie_string(&s.to_cookie_string());
        assert_eq!(again.cookies, s.cookies);
        assert!(!Session::from_cookie_string("csrftoken=t").is_logged_in());
    }

    #[test]
    fn set_cookie_and_ig_set_headers_are_absorbed() {
        let mut s = Session::default();
        let mut h = HeaderMap::new();
        h.append(
            reqwest::header::SET_COOKIE,
            HeaderValue::from_static("sessionid=xyz; Path=/; HttpOnly"),
        );
        h.append(
            reqwest::header::SET_COOKIE,
            HeaderValue::from_static("csrftoken=\"\"; Max-Age=0"),
        );
        h.insert("ig-set-ig-u-rur", HeaderValue::from_static("NAO,1,2:3"));
        h.insert("x-ig-set-www-claim", HeaderValue::from_static("hmac.1"));
        s.cookies.insert("csrftoken".into(), "old".into());
        s.absorb(&h);
        assert_eq!(s.cookie("sessionid"), Some("xyz"));
        assert_eq!(s.cookie("csrftoken"), None);
        assert_eq!(
            s.ig_set.get("ig-u-rur").map(String::as_str),
            Some("NAO,1,2:3")
        );
        assert_eq!(
            s.ig_set.get("x-ig-www-claim").map(String::as_str),
            Some("hmac.1")
        );
    }
}
