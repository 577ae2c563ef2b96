//! Metric helpers shared by every process: the text exposition and the content type Prometheus
//! expects. Metric names follow docs/metrics.md: `trawl_` prefix, base units, `_total` on counters,
//! labels from closed sets only.

use prometheus::{Encoder, Registry, TextEncoder};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric family of `registries` in the text format, and the metrics every process
/// has (its moves to a new database primary).
pub fn render(registries: &[&Registry]) -> String {
    let mut families = Vec::new();
    for registry in registries {
        families.extend(registry.gather());
    }
    families.extend(process_wide().gather());
    let mut buffer = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buffer) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(buffer).unwrap_or_default()
}

/// Metrics kept by the process rather than by one component, read when scraped.
fn process_wide() -> Registry {
    let registry = Registry::new();
    if let Ok(switches) = prometheus::IntCounter::new(
        "trawl_database_primary_switches_total",
        "Times this process moved its database connections to a new primary after a failover",
    ) {
        switches.inc_by(crate::primary::primary_switches());
        let _ = registry.register(Box::new(switches));
    }
    registry
}
