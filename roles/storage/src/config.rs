//! `[storage]`: this role's section of the node config.

use std::net::SocketAddr;
use std::time::Duration;

use ron_kernel::section::RoleSection;
use ron_kernel::{RoleName, Secret};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Listener for the role's own HTTP API (env `STORAGE_ADDR`). Bound only when
    /// omnigate is not in this process or `serve_remote = true`.
    pub addr: SocketAddr,
    /// Serve the HTTP API on `addr` even when omnigate runs in-process.
    pub serve_remote: bool,
    /// RAM for verified chunks and object records of hot objects (bytes; 0
    /// turns the cache off). Hits skip redb and re-hashing.
    pub read_cache_bytes: u64,
    /// Budget for stored chunk bytes (0: none). Under amnesia the store is
    /// a cache: when full it evicts the least recently used objects no
    /// index name points to. On disk nothing is evicted: a write that does
    /// not fit gets 507 `storage_full`. Not applied with `backend = "s3"`
    /// (the bucket holds the bytes).
    pub max_bytes: u64,
    /// Where chunk bytes and object records live: `redb` (this node's
    /// file, or RAM under amnesia) or `s3` (an S3-compatible bucket shared
    /// by replicas; this node keeps only its own upload state and a record
    /// of what it wrote in redb).
    pub backend: Backend,
    /// The bucket, for `backend = "s3"`.
    pub s3: S3Config,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Redb,
    S3,
}

/// `storage.s3.sign_payload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignPayload {
    /// Over `http://` endpoints only.
    Auto,
    Always,
    Never,
}

impl S3Config {
    /// Whether this endpoint's payloads are signed.
    pub fn signs_payload(&self) -> bool {
        match self.sign_payload {
            SignPayload::Always => true,
            SignPayload::Never => false,
            SignPayload::Auto => {
                !self.endpoint.starts_with("https://") && !self.endpoint.is_empty()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The service's URL; empty: AWS S3 in `region`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Key prefix of everything this store writes (`<prefix>/packs/…`,
    /// `<prefix>/objects/…`).
    pub prefix: String,
    /// Allow an `http://` endpoint (a service on a private network).
    pub allow_http: bool,
    /// `https://<bucket>.<endpoint>/…` instead of `https://<endpoint>/<bucket>/…`.
    pub virtual_hosted_style: bool,
    /// Credentials; unset: the standard `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` environment. Never
    /// printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    /// One S3 request's budget (each retry gets its own).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Retries of a failed request (every call is idempotent).
    pub retries: u32,
    /// Whether request payloads are SigV4-signed (`auto`: over `http://`
    /// only; TLS protects them otherwise).
    pub sign_payload: SignPayload,
    /// Packs younger than this are never collected by `ronctl storage
    /// gc` (another replica's write may be about to name them).
    #[serde(with = "humantime_serde")]
    pub gc_grace: Duration,
    /// How often the node sweeps the bucket itself (the same sweep as
    /// `ronctl storage gc`); 0: never (run `ronctl storage gc` instead,
    /// from one place, when replicas share the bucket).
    #[serde(with = "humantime_serde")]
    pub gc_interval: Duration,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            prefix: String::new(),
            allow_http: false,
            virtual_hosted_style: false,
            access_key_id: None,
            secret_access_key: None,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            retries: 2,
            sign_payload: SignPayload::Auto,
            gc_grace: Duration::from_secs(3600),
            gc_interval: Duration::ZERO,
        }
    }
}

// The role reads its section once, at start.
ron_kernel::restart_keys!(StorageConfig: all);

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 9447)),
            serve_remote: false,
            read_cache_bytes: 64 * 1024 * 1024,
            max_bytes: 0,
            backend: Backend::Redb,
            s3: S3Config::default(),
        }
    }
}

impl RoleSection for StorageConfig {
    const ROLE: RoleName = RoleName::Storage;
    const SCHEMA: Option<&'static ron_kernel::schema::Schema> = Some(&crate::store::SCHEMA);

    fn listen_addr(&self, fronted: bool) -> Option<SocketAddr> {
        ron_kernel::section::own_api(self.addr, self.serve_remote, fronted)
    }

    /// Edge defaults for micronode, sized for a 128 MiB box: a small read
    /// cache (under amnesia it shares the stored bytes) and 64 MiB of
    /// objects.
    fn micro() -> Self {
        Self {
            read_cache_bytes: 8 * 1024 * 1024,
            max_bytes: 64 * 1024 * 1024,
            ..Self::default()
        }
    }

    fn validate(&self, errs: &mut Vec<String>) {
        if self.max_bytes != 0 && self.max_bytes < crate::store::CHUNK_BYTES as u64 {
            errs.push(format!(
                "storage.max_bytes: {} is smaller than one chunk ({} bytes); use 0 for no budget",
                self.max_bytes,
                crate::store::CHUNK_BYTES
            ));
        }
        if self.backend == Backend::S3 {
            let s3 = &self.s3;
            if s3.bucket.is_empty() {
                errs.push("storage.s3.bucket must be set for backend = \"s3\"".into());
            }
            let endpoint = s3.endpoint.as_str();
            if !endpoint.is_empty() {
                if endpoint
                    .parse::<http::Uri>()
                    .map_or(true, |u| u.host().is_none())
                {
                    errs.push(format!("storage.s3.endpoint {endpoint:?} is not a URL"));
                } else if endpoint.starts_with("http://") && !s3.allow_http {
                    errs.push(format!(
                        "storage.s3.endpoint {endpoint:?} is http://; set storage.s3.allow_http = true to use it"
                    ));
                }
            }
            if s3.request_timeout.is_zero() || s3.connect_timeout.is_zero() {
                errs.push(
                    "storage.s3.request_timeout and connect_timeout must be above zero".into(),
                );
            }
            if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
                errs.push(
                    "storage.s3.access_key_id and secret_access_key go together (or neither: the AWS_* environment)"
                        .into(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_signed_where_no_tls_protects_them() {
        let at = |endpoint: &str, sign_payload| {
            S3Config {
                endpoint: endpoint.into(),
                sign_payload,
                ..S3Config::default()
            }
            .signs_payload()
        };
        assert!(at("http://minio.internal:9000", SignPayload::Auto));
        assert!(!at("https://s3.example", SignPayload::Auto));
        assert!(!at("", SignPayload::Auto), "AWS is https");
        assert!(at("https://s3.example", SignPayload::Always));
        assert!(!at("http://minio.internal:9000", SignPayload::Never));
    }
}
