//! `Accept` header negotiation, as the apiserver's `negotiation` package does it: clauses
//! parsed and ordered like `goautoneg` (by q-value, then concrete types before wildcards,
//! otherwise in written order), then the first clause that one of our serializers can satisfy
//! wins. `as=Table;g=meta.k8s.io;v=v1` (or `v1beta1`) on a JSON clause asks for a Table.
//! YAML, CBOR and `PartialObjectMetadata` are not served, so clauses asking only for them are
//! skipped, and a header with nothing servable is a 406.

use std::fmt;

use super::{Encoded, Format, IncludeObject, TableOptions, TableVersion, json};
use crate::api::ApiStatus;

/// Longest `Accept` header considered; anything longer is a 406 without parsing.
pub const MAX_ACCEPT_LEN: usize = 4096;

/// The media types served, in preference order (the 406 message lists them).
pub(crate) const ACCEPTED: [&str; 2] = [JSON, PROTOBUF];

const JSON: &str = "application/json";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// The `Accept` header names nothing we serve: carries the 406 `NotAcceptable` Status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotAcceptable {
    status: ApiStatus,
}

impl NotAcceptable {
    fn new() -> Self {
        Self {
            status: super::status::not_acceptable(),
        }
    }

    /// The Status to answer with (code 406, reason `NotAcceptable`).
    pub fn status(&self) -> &ApiStatus {
        &self.status
    }

    /// The response body the apiserver sends when negotiation itself fails: the Status as
    /// indented JSON with no trailing newline (Go's `WriteRawJSON`), `application/json`.
    pub fn encode(&self) -> Encoded {
        let mut compact = Vec::with_capacity(256);
        json::write_status(&mut compact, &self.status);
        Encoded {
            content_type: JSON,
            body: json::indent(&compact),
        }
    }
}

impl fmt::Display for NotAcceptable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.status.message)
    }
}

impl std::error::Error for NotAcceptable {}

/// Picks the response format for a Metrics API object from the `Accept` header: JSON when
/// absent or empty, otherwise the first servable clause in `goautoneg` order. The Table's
/// `include_object` is left at its default (`Metadata`); the caller sets it from the
/// `includeObject` query parameter.
pub fn negotiate(accept: Option<&str>) -> Result<Format, NotAcceptable> {
    let header = match accept {
        Some(h) if h.len() > MAX_ACCEPT_LEN => return Err(NotAcceptable::new()),
        Some(h) if !h.trim().is_empty() => h,
        _ => return Ok(Format::Json),
    };
    for clause in parse_accept(header) {
        for serializer in ACCEPTED {
            if !clause.matches(serializer) {
                continue;
            }
            if let Some(format) = clause.format_for(serializer) {
                return Ok(format);
            }
        }
    }
    Err(NotAcceptable::new())
}

/// Whether a `GET /apis` asks for aggregated discovery (`apidiscovery.k8s.io/v2`
/// `APIGroupDiscoveryList`) in JSON. As in the apiserver's discovery wrapper, plain clauses
/// do not count against it: the first clause naming that kind decides.
pub fn wants_aggregated_discovery(accept: Option<&str>) -> bool {
    let Some(header) = accept.filter(|h| h.len() <= MAX_ACCEPT_LEN) else {
        return false;
    };
    parse_accept(header).iter().any(|clause| {
        clause.matches(JSON)
            && clause.param("as") == Some("APIGroupDiscoveryList")
            && clause.param("g") == Some("apidiscovery.k8s.io")
            && clause.param("v") == Some("v2")
    })
}

// === private helpers ===

/// One clause of an `Accept` header.
#[derive(Debug)]
struct Clause<'a> {
    media_type: String,
    subtype: String,
    q: f32,
    params: Vec<(&'a str, &'a str)>,
}

impl Clause<'_> {
    /// `type/subtype`, `type/*` or `*/*` covers `media` (`application/json` etc.).
    fn matches(&self, media: &str) -> bool {
        let (media_type, subtype) = media.split_once('/').unwrap_or((media, ""));
        (self.media_type == media_type && (self.subtype == subtype || self.subtype == "*"))
            || (self.media_type == "*" && self.subtype == "*")
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    /// The format this clause selects from `serializer`, or `None` if the parameters ask for
    /// something it cannot produce (apimachinery's `acceptMediaTypeOptions`).
    fn format_for(&self, serializer: &str) -> Option<Format> {
        if self
            .param("stream")
            .is_some_and(|s| !s.is_empty() && s != "watch")
        {
            return None;
        }
        if self.param("sv").is_some_and(|s| !s.is_empty() && s != "v1") {
            return None;
        }
        let (kind, group, version) = (self.param("as"), self.param("g"), self.param("v"));
        if kind.is_none() && group.is_none() && version.is_none() {
            return Some(if serializer == JSON {
                Format::Json
            } else {
                Format::Protobuf
            });
        }
        let version = match (group, version) {
            (Some("meta.k8s.io"), Some("v1")) => TableVersion::V1,
            (Some("meta.k8s.io"), Some("v1beta1")) => TableVersion::V1beta1,
            _ => return None,
        };
        // Table exists only as JSON; PartialObjectMetadata is not served.
        (kind == Some("Table") && serializer == JSON).then_some(Format::Table(TableOptions {
            include_object: IncludeObject::Metadata,
            version,
        }))
    }
}

/// `goautoneg.ParseAccept`: clauses split on `,` and `;`, spaces trimmed, `q` parsed (a bad
/// one counts as 0), malformed media ranges dropped, then ordered. Like the apiserver, a
/// `q=0` clause is still served (last); unlike it, types compare case-insensitively.
fn parse_accept(header: &str) -> Vec<Clause<'_>> {
    let mut clauses = Vec::new();
    for part in header.split(',') {
        let part = trim_spaces(part);
        let mut pieces = part.split(';');
        let range = pieces.next().unwrap_or_default();
        let mut halves = range.split('/');
        let media_type = trim_spaces(halves.next().unwrap_or_default()).to_ascii_lowercase();
        let subtype = match (halves.next(), halves.next()) {
            (None, _) if media_type == "*" => "*".to_owned(),
            (Some(sub), None) => trim_spaces(sub).to_ascii_lowercase(),
            _ => continue,
        };
        let mut clause = Clause {
            media_type,
            subtype,
            q: 1.0,
            params: Vec::new(),
        };
        for param in pieces {
            let mut kv = param.split('=');
            let (Some(key), Some(value), None) = (kv.next(), kv.next(), kv.next()) else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            let key = trim_spaces(key);
            if key == "q" {
                clause.q = value.parse::<f32>().unwrap_or(0.0);
            } else {
                clause.params.push((key, trim_spaces(value)));
            }
        }
        clauses.push(clause);
    }
    // Go's sort.Sort runs an insertion sort on up to 12 elements, with a comparator that is
    // not a strict order; replaying that insertion sort gives the same order for any header
    // a client really sends (and a stable, bounded one for longer ones).
    let less = |a: &Clause<'_>, b: &Clause<'_>| {
        a.q > b.q
            || (a.media_type != "*" && b.media_type == "*")
            || (a.subtype != "*" && b.subtype == "*")
    };
    for i in 1..clauses.len() {
        let mut j = i;
        while j > 0 && less(&clauses[j], &clauses[j - 1]) {
            clauses.swap(j, j - 1);
            j -= 1;
        }
    }
    clauses
}

fn trim_spaces(s: &str) -> &str {
    s.trim_matches(' ')
}
