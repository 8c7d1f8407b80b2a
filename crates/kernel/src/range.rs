//! HTTP single-range requests (`Range: bytes=…`) against an object of known
//! size, as RFC 9110 §14 describes them.

use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range header: serve the whole object (200).
    Full,
    /// One satisfiable range: serve it (206).
    Partial(Range<u64>),
    /// A well-formed range that starts past the end: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header value. Malformed values and multiple ranges
/// are ignored (the whole object is served), as the RFC allows.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last n bytes.
        return match b.parse::<u64>() {
            Ok(n) if n == 0 || size == 0 => RangeRequest::Unsatisfiable,
            Ok(n) => RangeRequest::Partial(size.saturating_sub(n)..size),
            Err(_) => RangeRequest::Full,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeRequest::Full;
    };
    let end_incl = if b.is_empty() {
        None
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => Some(e),
            _ => return RangeRequest::Full,
        }
    };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    let end = end_incl.map_or(size, |e| (e + 1).min(size));
    RangeRequest::Partial(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Partial(0..10));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Partial(90..100));
        assert_eq!(parse_range(Some("bytes=90-1000"), 100), Partial(90..100));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Partial(90..100));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), Partial(0..100));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }

    #[test]
    fn malformed_or_multiple_ranges_mean_the_whole_object() {
        for h in [
            "bytes=5-1",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=",
            "bytes=-x",
        ] {
            assert_eq!(parse_range(Some(h), 100), Full, "{h}");
        }
    }
}
