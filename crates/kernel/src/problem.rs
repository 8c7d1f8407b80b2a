//! The one error envelope every HTTP surface of the node speaks:
//! `application/problem+json` (RFC 9457) with a stable `reason` label.
//!
//! Invariant: errors are rendered into this shape in one place; handlers
//! build a `Problem` and never format error bodies themselves.

use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::http::{full, Body};

#[derive(Debug, Clone)]
pub struct Problem {
    pub status: u16,
    /// The stable machine label (`busy`, `quota`, `not_found`…).
    pub reason: &'static str,
    pub detail: String,
    pub corr_id: Option<String>,
    pub retry_after_secs: Option<u64>,
    /// Headers the status calls for (RFC 9110): `Allow` on a 405,
    /// `Accept-Encoding` on a 415 for a content coding.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The JSON shape on the wire.
#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    corr_id: Option<&'a str>,
}

impl Problem {
    /// `reason` is the stable machine label; `detail` is the human
    /// sentence.
    pub fn new(status: StatusCode, reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status: status.as_u16(),
            reason,
            detail: detail.into(),
            corr_id: None,
            retry_after_secs: None,
            headers: Vec::new(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 405 with the `Allow` header RFC 9110 §15.5.6 requires; `allowed` is
    /// the route's methods, e.g. `"GET, HEAD"`.
    pub fn method_not_allowed(allowed: &'static str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("allowed methods: {allowed}"),
        )
        .with_header(header::ALLOW, HeaderValue::from_static(allowed))
    }

    /// 415 for a request body's content coding, with the `Accept-Encoding`
    /// the route would take (RFC 9110 §15.5.16); `"identity"` when it takes
    /// none.
    pub fn unsupported_encoding(detail: impl Into<String>, accepted: &'static str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_encoding",
            detail,
        )
        .with_header(header::ACCEPT_ENCODING, HeaderValue::from_static(accepted))
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn bad_request(reason: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, detail)
    }

    pub fn unavailable(
        reason: &'static str,
        detail: impl Into<String>,
        retry_after_secs: u64,
    ) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, reason, detail).retry_after(retry_after_secs)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn with_corr_id(mut self, corr_id: impl Into<String>) -> Self {
        self.corr_id = Some(corr_id.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The response. The problem rides along in the response's extensions
    /// so the serving layer can stamp the correlation id into the body and
    /// a gateway can count refusals by `reason`.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let wire = Wire {
            type_: format!("/problems/{}", self.reason),
            title: status.canonical_reason().unwrap_or("Error"),
            status: self.status,
            detail: &self.detail,
            reason: self.reason,
            corr_id: self.corr_id.as_deref(),
        };
        // Serializing a struct of strings and integers cannot fail.
        let body = serde_json::to_vec(&wire).unwrap_or_default();
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in &self.headers {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
        resp.extensions_mut().insert(self);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_problem_json_with_retry_after() {
        let resp = Problem::unavailable("busy", "too many requests in flight", 1)
            .with_corr_id("abc")
            .into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn a_405_names_its_methods_in_allow_and_a_415_its_codings() {
        let resp = Problem::method_not_allowed("GET, HEAD").into_response();
        assert_eq!(resp.headers()[header::ALLOW], "GET, HEAD");
        let resp = Problem::unsupported_encoding("no", "gzip, zstd").into_response();
        assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(resp.headers()[header::ACCEPT_ENCODING], "gzip, zstd");
    }
}
