//! Kait's media (issue 15): the claim check for blobs that should not travel inside every
//! webhook. A blob is uploaded once ([`Blobs::store`]: streamed in parts, hashed, checked
//! against its declared type), messages reference it by id, and each webhook carries a link
//! signed for its endpoint ([`LinkKeys`]) that Kait serves with HTTP Range ([`range`]), or,
//! for small blobs and receivers that cannot fetch, the bytes inline ([`webhook`]).
//!
//! The pure parts (sniffing, ranges, links, the webhook's `attachments` array) are unit-tested
//! here; the blob store is the only I/O.

pub mod blobs;
pub mod link;
pub mod range;
pub mod sniff;
pub mod webhook;

use std::sync::Arc;

pub use blobs::{BlobError, Blobs, Stored, UploadError};
pub use link::{Grant, LinkError, LinkKeys};

/// Everything that makes and serves attachment links, shared by the API and the dispatcher.
#[derive(Clone, Debug)]
pub struct Media {
    pub blobs: Blobs,
    pub links: LinkKeys,
    /// Where receivers reach this server (`--public-url`): links start with it.
    pub public_url: Arc<str>,
    /// The largest upload accepted (`--max-attachment-bytes`).
    pub max_upload_bytes: u64,
}

/// The default upload limit: 1 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1024 * 1024 * 1024;
