//! HTTP single-range requests (`Range: bytes=…`) against an object of known
//! size, as RFC 9110 §14 describes them.

use std::ops::Range;

use http::{header, HeaderMap, Method};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range header: serve the whole object (200).
    Full,
    /// One satisfiable range: serve it (206).
    Partial(Range<u64>),
    /// A well-formed range that starts past the end: 416.
    Unsatisfiable,
}

/// The `Range` value a request's range handling should see: none for any
/// method but GET (RFC 9110 §14.2: a HEAD answers 200 with the full length),
/// and none when an `If-Range` validator is not the object's strong `etag`
/// (§13.1.5: then the whole object is sent with 200). An HTTP-date
/// validator never matches, since objects carry no Last-Modified, and a weak
/// tag never matches strongly.
pub fn effective_range<'a>(method: &Method, headers: &'a HeaderMap, etag: &str) -> Option<&'a str> {
    if method != Method::GET {
        return None;
    }
    let range = headers.get(header::RANGE)?.to_str().ok()?;
    match headers.get(header::IF_RANGE) {
        None => Some(range),
        Some(v) if v.as_bytes() == etag.as_bytes() => Some(range),
        Some(_) => None,
    }
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
    fn range_counts_only_on_get_and_only_when_if_range_matches() {
        let tag = "\"b3:00\"";
        let with = |pairs: &[(header::HeaderName, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(k.clone(), v.parse().unwrap());
            }
            h
        };
        let r = with(&[(header::RANGE, "bytes=0-1")]);
        assert_eq!(effective_range(&Method::GET, &r, tag), Some("bytes=0-1"));
        assert_eq!(effective_range(&Method::HEAD, &r, tag), None);
        let matching = with(&[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, tag)]);
        assert_eq!(
            effective_range(&Method::GET, &matching, tag),
            Some("bytes=0-1")
        );
        for validator in ["\"b3:01\"", "W/\"b3:00\"", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            let h = with(&[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, validator)]);
            assert_eq!(effective_range(&Method::GET, &h, tag), None, "{validator}");
        }
    }

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
