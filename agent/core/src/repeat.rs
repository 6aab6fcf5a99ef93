//! Skipping kubelet bodies already decoded. The agent polls every second but the kubelet
//! refreshes its stats only every 10–15 s, so most reads return the bytes of the previous one.
//! Decoding and observing those again gives the same batch and the same view (sample times come
//! from the body), so [`RepeatFilter`] recognises them by a fingerprint (length and a 64-bit
//! hash; no copy of the body is kept) and the caller keeps what it has.
//!
//! A body is recognised only when decoding it did not depend on the scrape time: a line
//! without its own timestamp takes the scrape time, so the same bytes at another time are
//! another sample and are decoded again. A failed read forgets the fingerprint
//! ([`RepeatFilter::failed`]), so the next body is decoded and its status is recomputed.

use std::hash::{BuildHasher as _, Hasher as _};

use kubepulse_model::Timestamp;

use crate::decode::{Decoded, decode_body};

/// A body's length and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    len: usize,
    hash: u64,
}

impl Fingerprint {
    /// The fingerprint of `body`: one pass over its bytes (foldhash, several GB/s).
    pub fn of(body: &[u8]) -> Self {
        let mut hasher =
            foldhash::quality::FixedState::with_seed(0x6b75_6265_7075_6c73).build_hasher();
        hasher.write(body);
        Self {
            len: body.len(),
            hash: hasher.finish(),
        }
    }
}

/// What one kubelet body amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The same bytes as the last body decoded: the last batch, view and status still hold.
    Repeat,
    /// A body to use: its decode.
    New(Decoded),
}

/// Remembers the last body decoded (its fingerprint only).
#[derive(Clone, Debug, Default)]
pub struct RepeatFilter {
    last: Option<Fingerprint>,
}

impl RepeatFilter {
    /// A filter that has seen nothing: the first body is decoded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `body` read at `scrape_time`, unless it repeats the last body decoded.
    pub fn read(&mut self, body: &[u8], scrape_time: Timestamp) -> Read {
        let fingerprint = Fingerprint::of(body);
        if self.last == Some(fingerprint) {
            return Read::Repeat;
        }
        let decoded = decode_body(body, scrape_time);
        self.last = (!decoded.uses_scrape_time).then_some(fingerprint);
        Read::New(decoded)
    }

    /// The read failed (no body): the next body is decoded whatever it holds.
    pub fn failed(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests;
