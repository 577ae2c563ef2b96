//! Media: which files an item has ([`files`], I/O-free) and fetching them from the CDN into the
//! blob store ([`MediaFetcher`]). The `media` job that drives both is a crawler like the others
//! (`crate::crawl`).

mod fetch;
pub mod files;

pub use fetch::{Fetched, MediaError, MediaFetcher, Politeness};
