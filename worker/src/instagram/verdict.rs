//! Reading an answer without I/O: its status and body to done, retry or fail, so that every
//! branch can be tested and fuzzed.

use serde_json::Value;

use super::{Answer, Attempt, Call, IgError};
use crate::metrics::Outcome;

/// What an answer's status and body say, before the limiter hears of it.
#[derive(Debug)]
pub enum Verdict {
    /// The attempt's end, and the outcome it is counted under.
    Attempt(Attempt, Outcome),
    /// A 429: the limiter records the penalty and says until when.
    TooManyRequests,
}

/// Longest piece of Instagram's text that goes into an error (and so into a job's `last_error`).
pub const MAX_REASON_CHARS: usize = 200;

/// The part of reading an answer that needs no I/O: its status and JSON (as [`parse_body`] made
/// it) to done, retry or fail, as Instaloader reads them. Every reason quotes Instagram's words at most
/// [`MAX_REASON_CHARS`] characters long. `fuzz/fuzz_targets/ig_verdict.rs` feeds it any answer.
pub fn judge(status: u16, json: Option<Value>, call: &Call) -> Verdict {
    const BLOCKED: [&str; 2] = ["checkpoint_required", "challenge_required"];
    let message = short(
        json.as_ref()
            .and_then(|j| j.get("message"))
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let (attempt, outcome) = match status {
        200 => match json {
            None if call.wants_html() => (
                Attempt::Done(Answer {
                    json: Value::Null,
                    status,
                    html: String::new(),
                }),
                Outcome::Ok,
            ),
            None => (
                Attempt::Retry(Outcome::InvalidJson, "the answer is not JSON".into()),
                Outcome::InvalidJson,
            ),
            // Instagram's `status` is "ok" or "fail"; anything else (an object, a number) is an
            // answer we do not understand, not a success.
            // A GraphQL query Instagram no longer knows is answered with `errors` and no data.
            Some(j) if refused_query(&j).is_some() && call.config_key.is_some() => (
                Attempt::Fail(query_refused(call, refused_query(&j).unwrap_or_default())),
                Outcome::BadRequest,
            ),
            Some(j) if j.get("status").is_none_or(|s| s == "ok") => (
                Attempt::Done(Answer {
                    json: j,
                    status,
                    html: String::new(),
                }),
                Outcome::Ok,
            ),
            Some(j) => {
                let said = match &j["status"] {
                    Value::String(s) => format!("{:?}", short(s)),
                    value => short(&value.to_string()),
                };
                (
                    Attempt::Retry(Outcome::ServerError, format!("status {said}: {message}")),
                    Outcome::ServerError,
                )
            }
        },
        400 if json
            .as_ref()
            .and_then(|j| j.get("two_factor_required"))
            .and_then(Value::as_bool)
            == Some(true) =>
        {
            (
                Attempt::Fail(IgError::LoginRefused(
                    "two-factor authentication is required: log in with Instaloader and \
                     import its session file (trawl accounts import-session)"
                        .into(),
                )),
                Outcome::BadRequest,
            )
        }
        // A temporary block, not a demand for a person: the account rests (crate::cooldown).
        400 if message == "feedback_required" => (
            Attempt::Fail(IgError::FeedbackRequired(message)),
            Outcome::FeedbackRequired,
        ),
        400 if BLOCKED.contains(&message.as_str()) => (
            Attempt::Fail(IgError::AccountBlocked(message)),
            Outcome::Checkpoint,
        ),
        400 if call.paginated => (
            Attempt::Fail(IgError::BadRequest(message)),
            Outcome::BadRequest,
        ),
        400 if call.config_key.is_some() => (
            Attempt::Fail(query_refused(call, message)),
            Outcome::BadRequest,
        ),
        400 => (
            Attempt::Retry(Outcome::BadRequest, format!("400: {message}")),
            Outcome::BadRequest,
        ),
        401 => (
            Attempt::Fail(IgError::LoginRequired),
            Outcome::LoginRequired,
        ),
        403 if message == "login_required" => (
            Attempt::Fail(IgError::LoginRequired),
            Outcome::LoginRequired,
        ),
        403 => (
            Attempt::Fail(IgError::Forbidden(message)),
            Outcome::Forbidden,
        ),
        404 => (Attempt::Fail(IgError::NotFound(message)), Outcome::NotFound),
        429 => return Verdict::TooManyRequests,
        other => (
            Attempt::Retry(Outcome::ServerError, format!("HTTP {other}: {message}")),
            Outcome::ServerError,
        ),
    };
    Verdict::Attempt(attempt, outcome)
}

fn short(message: &str) -> String {
    message.chars().take(MAX_REASON_CHARS).collect()
}

/// The first error message of an answer that has GraphQL `errors` and no `data`.
fn refused_query(j: &Value) -> Option<String> {
    let first = j.get("errors")?.as_array()?.first()?;
    j.get("data").is_none_or(Value::is_null).then(|| {
        short(
            first
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("an error without a message"),
        )
    })
}

/// The error for a query Instagram refused, naming the setting that holds its id.
pub fn query_refused(call: &Call, message: String) -> IgError {
    let id = match &call.api {
        super::Api::Graphql { query_hash } => format!("query_hash {query_hash}"),
        super::Api::DocId { doc_id } => format!("doc_id {doc_id}"),
        _ => call.path.clone(),
    };
    IgError::QueryRefused {
        key: call.config_key.unwrap_or("instagram"),
        id,
        message,
    }
}

/// An answer's body as the client reads it: its JSON with NUL scrubbed, or `None` when it is not
/// JSON (a retry for a 200, unless an HTML page was asked for).
pub fn parse_body(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok().map(|mut j| {
        scrub_nul(&mut j);
        j
    })
}

/// Whether an HTML page arrived whole: it closes its `html` element (after which only
/// whitespace may follow). A page cut short is retried rather than read.
pub fn whole_page(body: &[u8]) -> bool {
    const CLOSE: &[u8] = b"</html>";
    let end = body
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |last| last + 1);
    end >= CLOSE.len() && body[end - CLOSE.len()..end].eq_ignore_ascii_case(CLOSE)
}

/// PostgreSQL's text and jsonb cannot hold NUL (`\u0000`): it becomes U+FFFD in every string
/// and key of an answer, so one odd character cannot make a page (or a reason) unstorable.
fn scrub_nul(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{fffd}"),
        Value::Array(items) => items.iter_mut().for_each(scrub_nul),
        Value::Object(map) if map.keys().any(|k| k.contains('\0')) => {
            for (key, mut v) in std::mem::take(map) {
                scrub_nul(&mut v);
                map.insert(key.replace('\0', "\u{fffd}"), v);
            }
        }
        Value::Object(map) => map.values_mut().for_each(scrub_nul),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(status: u16, body: &str, call: &Call) -> String {
        match judge(status, parse_body(body.as_bytes()), call) {
            Verdict::Attempt(Attempt::Done(a), o) => format!("done {} {}", a.status, o.as_str()),
            Verdict::Attempt(Attempt::Retry(o, reason), _) => {
                format!("retry {}: {reason}", o.as_str())
            }
            Verdict::Attempt(Attempt::Fail(e), o) => format!("fail {}: {e}", o.as_str()),
            Verdict::Attempt(Attempt::ProxyFailed(f), _) => format!("proxy: {f}"),
            Verdict::TooManyRequests => "429".into(),
        }
    }

    #[test]
    fn a_page_is_whole_only_when_it_closes_its_html_element() {
        assert!(whole_page(b"<html><body></body></html>"));
        assert!(whole_page(b"<html></HTML>\n \r\n"));
        assert!(!whole_page(b"{\"data\": {\"user\": {\"edge_owner"));
        assert!(!whole_page(b"<html><script>{\"xig_user_by"));
        assert!(!whole_page(b""));
        assert!(!whole_page("</html>\u{e9}".as_bytes()));
    }

    #[test]
    fn answers_are_judged_as_the_reference_says() {
        let web = Call::web("/api/v1/users/web_profile_info/", &[]);
        let page = Call {
            paginated: true,
            ..Call::graphql(
                "9b498c08",
                "instagram.query_hashes.hashtag_posts",
                &super::super::Vars::new(),
            )
        };
        let post = Call::doc_id(
            "271284",
            "instagram.doc_ids.post",
            &super::super::Vars::new(),
        );
        let home = Call::page("/");
        let cases = [
            (200, r#"{"data": {}}"#, &web, "done 200 ok"),
            (200, r#"{"status": "ok"}"#, &web, "done 200 ok"),
            (200, "<html>", &home, "done 200 ok"),
            (
                200,
                "<html>",
                &web,
                "retry invalid_json: the answer is not JSON",
            ),
            (
                200,
                r#"{"status": "fail", "message": "try later"}"#,
                &web,
                r#"retry server_error: status "fail": try later"#,
            ),
            (
                400,
                r#"{"message": "checkpoint_required"}"#,
                &web,
                "fail checkpoint: the account needs a human: checkpoint_required",
            ),
            (
                400,
                r#"{"message": "feedback_required"}"#,
                &web,
                "fail feedback_required: Instagram blocks the account for a while: \
                 feedback_required",
            ),
            (
                400,
                r#"{"message": "bad first"}"#,
                &page,
                "fail bad_request: bad request: bad first",
            ),
            (
                200,
                r#"{"status": {"caption": "ok"}}"#,
                &web,
                r#"retry server_error: status {"caption":"ok"}: "#,
            ),
            (
                400,
                r#"{"message": "x"}"#,
                &web,
                "retry bad_request: 400: x",
            ),
            (
                403,
                r#"{"message": "login_required"}"#,
                &web,
                "fail login_required: not logged in (redirected to the login page)",
            ),
            (404, "", &web, "fail not_found: not found: "),
            (
                400,
                r#"{"message": "unknown doc_id", "status": "fail"}"#,
                &post,
                "fail bad_request: Instagram refused doc_id 271284 (unknown doc_id); if it has \
                 retired that id, set instagram.doc_ids.post to the one its web app sends now",
            ),
            (
                200,
                r#"{"errors": [{"message": "gone"}], "data": null}"#,
                &post,
                "fail bad_request: Instagram refused doc_id 271284 (gone); if it has retired \
                 that id, set instagram.doc_ids.post to the one its web app sends now",
            ),
            (429, "", &web, "429"),
            (502, "<html>", &web, "retry server_error: HTTP 502: "),
        ];
        for (status, body, call, want) in cases {
            assert_eq!(verdict(status, body, call), want, "{status} {body}");
        }
    }

    /// Instagram's words go into `last_error` and logs: a huge `status` or `message` is cut.
    #[test]
    fn a_reason_quotes_at_most_a_bounded_piece_of_the_answer() {
        let web = Call::web("/", &[]);
        let huge = "x".repeat(1_000_000);
        for body in [
            serde_json::json!({ "status": huge }),
            serde_json::json!({ "status": "fail", "message": huge }),
        ] {
            let reason = verdict(200, &body.to_string(), &web);
            assert!(
                reason.len() < 3 * MAX_REASON_CHARS,
                "{} bytes",
                reason.len()
            );
        }
    }
}
