//! How the client judges an answer's status and body: `trawl_worker::instagram::judge`, the step
//! between reading an answer and telling the limiter about it.
//!
//! Input: bytes 0–1 pick the status (big-endian, modulo 600), byte 2 the call (bit 0 an HTML
//! page, bit 1 a paginated query), the rest is the body as `parse_body` reads it.
//! Besides not panicking: a 429 is always a penalty for the limiter and nothing else; a 200 with
//! JSON whose `status` is absent or "ok" is always the answer, as is any 200 for an HTML page; a
//! 5xx is always retried; a 401 always asks for a login; every reason renders, holds no NUL and
//! quotes at most `MAX_REASON_CHARS` characters of the answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use trawl_worker::instagram::{
    Attempt, Call, IgError, MAX_REASON_CHARS, Shape, Verdict, judge, parse_body,
};

/// The fixed words of the longest reason ("two-factor authentication is required: …") plus two
/// quoted pieces of the answer (`status "…": message`), with room for escapes.
const MAX_REASON_BYTES: usize = 256 + 2 * 4 * (2 * MAX_REASON_CHARS);

fn check_reason(reason: &str) {
    assert!(!reason.is_empty(), "an empty reason");
    assert!(!reason.contains('\0'), "a NUL in a reason: {reason:?}");
    assert!(
        reason.len() <= MAX_REASON_BYTES,
        "a reason of {} bytes",
        reason.len()
    );
}

fuzz_target!(|data: &[u8]| {
    let [hi, lo, flags, body @ ..] = data else {
        return;
    };
    let status = u16::from_be_bytes([*hi, *lo]) % 600;
    let mut call = Call::web("/api/v1/users/web_profile_info/", &[]);
    if flags & 1 != 0 {
        call.shape = Shape::Page;
    }
    call.paginated = flags & 2 != 0;
    if flags & 4 != 0 {
        call.config_key = Some("instagram.doc_ids.post");
    }
    let json = parse_body(body);
    let says_ok = json.as_ref().is_some_and(|j| {
        matches!(
            j.get("status").map(Value::as_str),
            None | Some(Some("ok"))
        )
    });

    match judge(status, json, &call) {
        Verdict::TooManyRequests => assert_eq!(status, 429, "a penalty for {status}"),
        Verdict::Attempt(attempt, outcome) => {
            assert_ne!(status, 429, "a 429 judged {outcome:?}");
            match attempt {
                Attempt::Done(answer) => {
                    assert_eq!(answer.status, 200);
                    assert!(says_ok || call.wants_html(), "a 200 taken although its status is not ok");
                }
                Attempt::Retry(_, reason) => {
                    assert!(!(status == 200 && says_ok), "a good answer retried");
                    assert!(!matches!(status, 401 | 404), "{status} retried");
                    check_reason(&reason);
                }
                Attempt::Fail(e) => {
                    assert!(!(500..600).contains(&status), "a {status} failed at once: {e}");
                    if status == 401 {
                        assert!(matches!(e, IgError::LoginRequired), "401 judged {e}");
                    }
                    check_reason(&e.to_string());
                }
            }
            if status == 200 && says_ok {
                assert_eq!(outcome.as_str(), "ok");
            }
        }
    }
});
