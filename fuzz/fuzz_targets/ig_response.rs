//! Instagram's answers, as the worker reads them: the client's JSON reading and rate-limit hints,
//! then the crawler's decoding of each kind of answer.
//!
//! Input: byte 0 picks the answer kind (`AnswerKind::ALL[b % AnswerKind::ALL.len()]`); the rest is the body, or
//! `headers NUL body` where headers are `name: value` lines (a raw NUL cannot occur in JSON).
//! Besides not panicking: no NUL reaches a row (PostgreSQL text cannot hold one), every time is
//! one PostgreSQL can read back, a page that says it has a next page has a cursor, and a
//! rate-limit hint never asks to wait into the past or beyond a day.
#![no_main]

use chrono::{DateTime, Datelike, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use trawl_shared::limiter::ServerHints;
use trawl_worker::crawl::{AnswerKind, Decoded, decode_answer};
use trawl_worker::instagram::{decode_rur, parse_body};

/// The simulator's first user: its answers are the seeds.
const SUBJECT: i64 = 1_000_000;
const TARGET: &str = "EAAA";

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn storable_time(t: &Option<DateTime<Utc>>) {
    if let Some(t) = t {
        assert!((1..=9999).contains(&t.year()), "time {t} cannot be stored");
    }
}

fn check_rows(d: &Decoded) {
    assert!(
        !d.has_next || d.end_cursor.is_some(),
        "a next page without a cursor"
    );
    let rows = [
        serde_json::to_value(&d.users),
        serde_json::to_value(&d.posts),
        serde_json::to_value(&d.comments),
        serde_json::to_value(&d.stories),
    ];
    for row in rows {
        let row = row.expect("rows serialise as the upserts send them");
        assert!(!has_nul(&row), "a NUL reached a row: {row}");
    }
    d.posts.iter().for_each(|p| storable_time(&p.taken_at));
    d.comments.iter().for_each(|c| storable_time(&c.created_at));
    for s in &d.stories {
        storable_time(&s.taken_at);
        storable_time(&s.expiring_at);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let kind = AnswerKind::ALL[usize::from(selector) % AnswerKind::ALL.len()];
    let (headers, body) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&b""[..], rest),
    };
    let headers: Vec<(String, String)> = String::from_utf8_lossy(headers)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();

    let json = parse_body(body);
    if let Some(j) = &json {
        assert!(!has_nul(j), "parse_body left a NUL");
    }
    let now = Utc.with_ymd_and_hms(2026, 1, 8, 10, 0, 0).unwrap();
    let hints = ServerHints::parse(
        |name| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        },
        json.as_ref(),
        now,
    );
    for got_429 in [false, true] {
        if let Some(until) = hints.block_until(now, got_429) {
            assert!(
                until > now && until <= now + chrono::Duration::days(1),
                "{until}"
            );
        }
    }
    for (_, value) in &headers {
        let _ = decode_rur(value);
    }

    match decode_answer(kind, TARGET, SUBJECT, body) {
        Ok(decoded) => check_rows(&decoded),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
