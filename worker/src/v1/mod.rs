//! The v1 platform (docs/v1-client.md): its API client ([`client`]), one crawler per v1 job kind
//! ([`crawl`]) and a worker's hold on a v1 account.

pub mod client;
pub mod crawl;
mod hold;

pub use client::{PLATFORM, Page, V1Client, V1Error};
