//! `trawl limits`: the rate-limit ledger as people read it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use trawl_shared::limiter::ledger::{RECENT_MINUTES, ScopeUsage};

use crate::client::{ApiClient, CliError};
use crate::jobs::print_json;

pub async fn show(
    client: &ApiClient,
    account: Option<String>,
    egress: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    let mut path = "/v1/limits".to_owned();
    if let Some(a) = &account {
        path.push_str(&format!("?account={}", crate::jobs::url_segment(a)));
    } else if let Some(e) = &egress {
        path.push_str(&format!("?egress={}", crate::jobs::url_segment(e)));
    }
    let answer: Value = client.get(&path).await?;
    if json {
        print_json(&answer);
        return Ok(());
    }
    let scopes: Vec<ScopeUsage> =
        serde_json::from_value(answer).map_err(CliError::UnreadableAnswer)?;
    if scopes.is_empty() {
        println!("no requests recorded in the last hour");
    }
    for scope in &scopes {
        print!("{}", render(scope));
    }
    Ok(())
}

fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (t - now).num_milliseconds() as f64 / 1000.0;
    if secs <= 0.0 {
        "now".into()
    } else {
        format!("in {secs:.1}s")
    }
}

/// One scope: per key used/cap, next free slot, and Instaloader's table of recent counts.
pub fn render(scope: &ScopeUsage) -> String {
    let mut out = scope.scope.clone();
    match scope.penalty_until {
        Some(p) => out.push_str(&format!("  PENALTY until {p} ({})\n", when(p, scope.at))),
        None => out.push('\n'),
    }
    out.push_str(&format!(
        "  {:<40} {:>9} {:>10}  {:<10}",
        "QUERY TYPE", "USED/CAP", "30m (ios)", "NEXT FREE"
    ));
    for m in RECENT_MINUTES {
        out.push_str(&format!(" {:>4}", format!("{m}m")));
    }
    out.push('\n');
    for k in &scope.keys {
        let iphone = match (k.iphone_used, k.iphone_cap) {
            (Some(u), Some(c)) => format!("{u}/{c}"),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "  {:<40} {:>9} {:>10}  {:<10}",
            k.query_type,
            format!("{}/{}", k.used, k.cap),
            iphone,
            when(k.next_free, scope.at)
        ));
        for n in k.recent {
            out.push_str(&format!(" {n:>4}"));
        }
        out.push('\n');
    }
    let other_platform = scope.keys.iter().any(|k| {
        matches!(
            trawl_shared::limiter::QueryType::from_key(&k.query_type),
            Some(trawl_shared::limiter::QueryType::Tier { .. })
        )
    });
    let label = if other_platform {
        "shared window"
    } else {
        "all GraphQL (10 min)"
    };
    if scope.graphql_cap > 0 {
        out.push_str(&format!(
            "  {:<40} {:>9}\n",
            label,
            format!("{}/{}", scope.graphql_used, scope.graphql_cap)
        ));
    }
    out
}
