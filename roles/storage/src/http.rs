//! The storage role's HTTP API (DESIGN §6), also what omnigate passes
//! object requests through to:
//!
//! - `PUT /v1/o` — streamed body (≤ `limits.max_body_bytes`) → `201
//!   {address, size}` (`200` when the content was already stored);
//! - `PUT /v1/o/{address}` — the same, checked against the address: `201`
//!   new, `200` already there, `422` mismatch (nothing kept);
//! - `GET|HEAD /v1/o/{address}` — streamed, single `Range` (`206`/`416`),
//!   `ETag`, `If-None-Match` (`304`), immutable caching, `Accept-Ranges`;
//! - `DELETE /v1/o/{address}` — `204`, or `404`.
//!
//! Writes need the write capability (a bearer token from `auth.write_tokens`;
//! loopback peers when none is configured). A body is never buffered whole:
//! frames go to a blocking writer thread as they arrive.
//!
//! Invariant: a response never carries a byte that failed verification;
//! when a chunk fails after the headers went out, the body is cut.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use ron_kernel::http::ReqBody;
use ron_kernel::http::{empty, json, pieces, Body, ChannelBody, Routed};
use ron_kernel::range::{effective_range, parse_range, RangeRequest};
use ron_kernel::request::{blocking, AsProblem};
use ron_kernel::request::{body_refusal, stream_body, write_refusal};
use ron_kernel::{Bus, ContentAddress, KernelEvent, Live, NodeSettings, Problem};
use tokio::sync::mpsc;

use crate::store::{ObjectMeta, ObjectStore, StoreError};

const ROUTE_PUT: &str = "/v1/o";
const ROUTE_OBJECT: &str = "/v1/o/{address}";
const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// What the handlers share.
pub struct StorageApi {
    pub(crate) store: ObjectStore,
    pub(crate) settings: Live<NodeSettings>,
    pub(crate) bus: Bus,
}

impl StorageApi {
    pub fn new(store: ObjectStore, settings: Live<NodeSettings>, bus: Bus) -> Self {
        Self {
            store,
            settings,
            bus,
        }
    }
}

impl AsProblem for StoreError {
    fn as_problem(&self) -> Problem {
        match self {
            StoreError::NotFound => Problem::not_found("no object with that address"),
            StoreError::Integrity { .. } => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "integrity",
                "the stored object failed verification; nothing was served",
            ),
            StoreError::RangeNotSatisfiable { size } => Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the object has {size} bytes"),
            ),
            StoreError::UploadNotFound => Problem::new(
                StatusCode::NOT_FOUND,
                "upload_not_found",
                "no upload with that id (finished, aborted, or never started)",
            ),
            StoreError::PartOutOfOrder { expected, got } => Problem::new(
                StatusCode::CONFLICT,
                "part_order",
                format!("part {got} is out of order; send part {expected} next"),
            ),
            StoreError::DiskFull(_) => Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "disk_full",
                "the store is out of space; nothing was written",
            ),
            StoreError::Full { need, max, evicts } => Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                format!(
                    "the store's byte budget (storage.max_bytes = {max}) has no room for \
                 {need} more bytes{}; nothing was stored",
                    if *evicts {
                        " and nothing more can be evicted (named objects and unfinished writes stay)"
                    } else {
                        " (a store on disk never evicts)"
                    }
                ),
            ),
            StoreError::Db(_) | StoreError::Schema(_) => Problem::internal("storage failure"),
            // The bucket is down or slow: the client may retry; the
            // detail names the call, never a credential.
            StoreError::Backend(crate::remote::RemoteError::Timeout(..)) => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "downstream_timeout",
                self.to_string(),
            ),
            StoreError::Backend(_) => Problem::unavailable("downstream_down", self.to_string(), 1),
        }
    }
}

fn problem(route: &'static str, p: Problem) -> Routed {
    Routed::new(route, p.into_response())
}

pub async fn handle(api: Arc<StorageApi>, req: Request<ReqBody>, peer: SocketAddr) -> Routed {
    // The path is borrowed, not copied, on the way to an object.
    let path = req.uri().path();
    let method = req.method().clone();
    if path == "/v1/o" {
        return match method {
            Method::PUT => put(api, req, peer, None).await,
            _ => problem(ROUTE_PUT, Problem::method_not_allowed("PUT")),
        };
    }
    if path == "/v1/uploads" || path.starts_with("/v1/uploads/") {
        let path = path.to_owned();
        return uploads(api, req, peer, &path).await;
    }
    let Some(raw) = path.strip_prefix("/v1/o/") else {
        return problem("/{unknown}", Problem::not_found(format!("no route {path}")));
    };
    if !matches!(
        method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE
    ) {
        return problem(
            ROUTE_OBJECT,
            Problem::method_not_allowed("GET, HEAD, PUT, DELETE"),
        );
    }
    let parsed = match ron_kernel::request::path_param(raw) {
        Some(decoded) => ContentAddress::parse(&decoded).map_err(|e| e.to_string()),
        None => Err("not UTF-8 once decoded".to_owned()),
    };
    let address = match parsed {
        Ok(a) => a,
        Err(e) => {
            return problem(
                ROUTE_OBJECT,
                Problem::bad_request("bad_address", format!("{raw:?}: {e}")),
            )
        }
    };
    match method {
        Method::GET | Method::HEAD => get(api, req, address).await,
        Method::PUT => put(api, req, peer, Some(address)).await,
        Method::DELETE => delete(api, req, peer, address).await,
        _ => problem(
            ROUTE_OBJECT,
            Problem::method_not_allowed("GET, HEAD, PUT, DELETE"),
        ),
    }
}

async fn put(
    api: Arc<StorageApi>,
    req: Request<ReqBody>,
    peer: SocketAddr,
    expected: Option<ContentAddress>,
) -> Routed {
    let route = if expected.is_some() {
        ROUTE_OBJECT
    } else {
        ROUTE_PUT
    };
    let settings = api.settings.load();
    if let Some(p) = write_refusal(&settings, &req, peer) {
        return problem(route, p);
    }
    if let Some(p) = body_refusal(&req, settings.max_body_bytes) {
        return problem(route, p);
    }

    // A blocking thread owns the writer; frames reach it as they arrive.
    // It commits only once told the whole body arrived: a body cut short
    // (timeout, reset, over the cap) ends it unfinished, and an unfinished
    // writer takes back every chunk it stored.
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let (whole_tx, whole_rx) = tokio::sync::oneshot::channel::<()>();
    let store = api.store.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut w = store.writer();
        while let Some(data) = rx.blocking_recv() {
            w.write(&data)?;
        }
        match whole_rx.blocking_recv() {
            Ok(()) => w.finish().map(Some),
            Err(_) => Ok(None),
        }
    });
    let streamed = stream_body(req.into_body(), &settings, tx).await;
    if streamed.is_ok() {
        let _ = whole_tx.send(());
    } else {
        drop(whole_tx);
    }
    let written = writer.await;
    if let Err(p) = streamed {
        return problem(route, p);
    }
    let (meta, created) = match written {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => return problem(route, Problem::internal("writer ended unfinished")),
        Ok(Err(e)) => return problem(route, e.as_problem()),
        Err(e) => return problem(route, Problem::internal(format!("writer task: {e}"))),
    };
    if let Some(want) = expected {
        if want != meta.address {
            if created {
                let store = api.store.clone();
                let addr = meta.address;
                let _ = tokio::task::spawn_blocking(move || store.delete(&addr)).await;
            }
            return problem(
                route,
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "digest_mismatch",
                    format!("the body hashes to {}, not {want}", meta.address),
                ),
            );
        }
    }
    Routed::new(route, stored(&api, &meta, created))
}

/// The answer to a write that produced an object: `ObjectStored` on the
/// bus when it is new, then `201` (new) or `200` (already stored) with
/// `{address, size}` and the object's ETag.
fn stored(api: &StorageApi, meta: &ObjectMeta, created: bool) -> Response<Body> {
    if created {
        api.bus.publish(KernelEvent::ObjectStored {
            address: meta.address.to_string(),
            size: meta.size,
        });
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = json(
        status,
        &serde_json::json!({"address": meta.address, "size": meta.size}),
    );
    resp.headers_mut().insert(header::ETAG, etag(&meta.address));
    resp
}

const ROUTE_UPLOADS: &str = "/v1/uploads";
const ROUTE_UPLOAD: &str = "/v1/uploads/{id}";
const ROUTE_PART: &str = "/v1/uploads/{id}/{n}";
const ROUTE_COMPLETE: &str = "/v1/uploads/{id}/complete";

fn upload_json(id: u64, st: &crate::store::UploadState) -> serde_json::Value {
    serde_json::json!({"id": format!("{id:016x}"), "next_part": st.next_part, "size": st.size})
}

/// Resumable uploads: `POST /v1/uploads` → `{id}`; `PUT
/// /v1/uploads/{id}/{n}` (parts in order from 0, each ≤ the body cap);
/// `POST /v1/uploads/{id}/complete` → `{address, size}`; `GET
/// /v1/uploads/{id}` → where to resume; `DELETE /v1/uploads/{id}` aborts.
async fn uploads(
    api: Arc<StorageApi>,
    req: Request<ReqBody>,
    peer: SocketAddr,
    path: &str,
) -> Routed {
    let settings = api.settings.load();
    let rest = path.strip_prefix("/v1/uploads").unwrap_or("");
    let decoded: Vec<_> = rest
        .split('/')
        .filter(|p| !p.is_empty())
        .map(|p| ron_kernel::request::path_param(p).unwrap_or_default())
        .collect();
    let parts: Vec<&str> = decoded.iter().map(|p| p.as_ref()).collect();
    let method = req.method().clone();
    let route = match parts.len() {
        0 => ROUTE_UPLOADS,
        1 => ROUTE_UPLOAD,
        _ if parts.get(1) == Some(&"complete") => ROUTE_COMPLETE,
        _ => ROUTE_PART,
    };
    if method != Method::GET {
        if let Some(p) = write_refusal(&settings, &req, peer) {
            return problem(route, p);
        }
    }
    if parts.is_empty() {
        if method != Method::POST {
            return problem(route, Problem::method_not_allowed("POST"));
        }
        let store = api.store.clone();
        return match blocking(move || store.upload_create()).await {
            Ok(id) => Routed::new(
                route,
                json(
                    StatusCode::CREATED,
                    &serde_json::json!({"id": format!("{id:016x}")}),
                ),
            ),
            Err(p) => problem(route, p),
        };
    }
    let id = match (parts[0].len() == 16)
        .then(|| u64::from_str_radix(parts[0], 16).ok())
        .flatten()
    {
        Some(id)
            if parts[0]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            id
        }
        _ => {
            return problem(
                route,
                Problem::bad_request("bad_upload_id", "upload ids are 16 lowercase hex digits"),
            )
        }
    };
    let store = api.store.clone();
    match (method, parts.len(), parts.get(1).copied()) {
        (Method::GET, 1, _) => match blocking(move || store.upload_state(id)).await {
            Ok(st) => Routed::new(route, json(StatusCode::OK, &upload_json(id, &st))),
            Err(p) => problem(route, p),
        },
        (Method::DELETE, 1, _) => match blocking(move || store.upload_abort(id)).await {
            Ok(true) => {
                let mut resp = Response::new(empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                Routed::new(route, resp)
            }
            Ok(false) => problem(route, StoreError::UploadNotFound.as_problem()),
            Err(p) => problem(route, p),
        },
        (Method::POST, 2, Some("complete")) => {
            match blocking(move || store.upload_complete(id)).await {
                Ok((meta, created)) => Routed::new(route, stored(&api, &meta, created)),
                Err(p) => problem(route, p),
            }
        }
        (Method::PUT, 2, Some(n)) if n != "complete" => {
            let Ok(n) = n.parse::<u64>() else {
                return problem(
                    route,
                    Problem::bad_request("bad_part", "part numbers are decimal, from 0"),
                );
            };
            if let Some(p) = body_refusal(&req, settings.max_body_bytes) {
                return problem(route, p);
            }
            // A part is at most the body cap; it is gathered (into one
            // buffer of the announced length), then committed in one
            // durable transaction.
            let announced = req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                .unwrap_or(0)
                .min(settings.max_body_bytes as usize);
            let (tx, mut rx) = mpsc::channel::<Bytes>(4);
            let gather = tokio::task::spawn_blocking(move || {
                let mut data = Vec::with_capacity(announced);
                while let Some(b) = rx.blocking_recv() {
                    data.extend_from_slice(&b);
                }
                store.upload_part(id, n, Bytes::from(data))
            });
            if let Err(p) = stream_body(req.into_body(), &settings, tx).await {
                gather.abort();
                return problem(route, p);
            }
            match gather.await {
                Ok(Ok(
                    crate::store::PartOutcome::Stored(st)
                    | crate::store::PartOutcome::Duplicate(st),
                )) => Routed::new(route, json(StatusCode::OK, &upload_json(id, &st))),
                Ok(Err(e)) => problem(route, e.as_problem()),
                Err(e) => problem(route, Problem::internal(format!("upload task: {e}"))),
            }
        }
        (_, 1, _) => problem(route, Problem::method_not_allowed("GET, DELETE")),
        (_, 2, Some("complete")) => problem(route, Problem::method_not_allowed("POST")),
        (_, 2, _) => problem(route, Problem::method_not_allowed("PUT")),
        _ => problem(
            "/{unknown}",
            Problem::not_found(format!("no upload route {path}")),
        ),
    }
}

/// An object's ETag: its address (`b3:` and 64 hex digits), quoted. One
/// allocation (the value's own block), which its clones share.
fn etag(address: &ContentAddress) -> HeaderValue {
    const P: usize = ron_kernel::address::PREFIX.len();
    let mut tag = [b'"'; P + 66];
    tag[1..1 + P].copy_from_slice(ron_kernel::address::PREFIX.as_bytes());
    let mut hex = [0u8; 64];
    address.write_hex(&mut hex);
    tag[1 + P..P + 65].copy_from_slice(&hex);
    HeaderValue::from_maybe_shared(Bytes::from_owner(tag))
        // Visible ASCII between quotes is a valid header value.
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// The response headers of an object that never change (it is immutable
/// and named by its content), rendered once per record and then cloned
/// into every response without allocating.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    etag: HeaderValue,
    /// `Content-Length` of the whole object.
    length: HeaderValue,
}

/// Where a record keeps its `Rendered` headers. Not part of what a record
/// is: two records are equal whether or not either was rendered.
#[derive(Debug, Clone, Default)]
pub(crate) struct RenderedSlot(std::sync::OnceLock<Rendered>);

impl PartialEq for RenderedSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RenderedSlot {}

fn rendered(meta: &ObjectMeta) -> &Rendered {
    meta.rendered.0.get_or_init(|| Rendered {
        etag: etag(&meta.address),
        length: HeaderValue::from(meta.size),
    })
}

fn if_none_match(req: &Request<ReqBody>, tag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == tag)
}

fn object_headers(resp: &mut Response<Body>, tag: &HeaderValue) {
    let h = resp.headers_mut();
    h.insert(header::ETAG, tag.clone());
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_IMMUTABLE),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

/// At most this many pieces (of up to 64 KiB) are read on a GET's first
/// trip to the blocking pool, when no I/O is needed for them.
const FIRST_TRIP_PIECES: usize = 32;

/// What a visit to the store (its cache, or redb on the blocking pool)
/// decided about a GET or HEAD.
enum GetPlan {
    NotModified,
    Unsatisfiable(u64),
    /// Headers only (HEAD, or an empty range).
    Empty(u64, StatusCode, std::ops::Range<u64>),
    /// The first verified pieces, and a reader for the rest if any remains.
    Body(Box<BodyPlan>),
    /// Every piece of the range, verified, from the read cache.
    Cached(u64, StatusCode, std::ops::Range<u64>, Vec<Bytes>),
}

struct BodyPlan {
    size: u64,
    status: StatusCode,
    range: std::ops::Range<u64>,
    /// The first piece and those the reader had in hand after it.
    first: Vec<Bytes>,
    rest: Option<crate::store::ObjectReader>,
}

/// What a GET or HEAD asks: answered from the record alone, or a range to
/// read.
struct Ask {
    not_modified: bool,
    range: Option<String>,
    head_only: bool,
}

impl Ask {
    /// The answer from the record alone (`Err`: not modified, a range it
    /// cannot satisfy, headers only), or the status and range to read.
    fn against(&self, meta: &ObjectMeta) -> Result<(StatusCode, std::ops::Range<u64>), GetPlan> {
        if self.not_modified {
            return Err(GetPlan::NotModified);
        }
        let (status, range) = match parse_range(self.range.as_deref(), meta.size) {
            RangeRequest::Full => (StatusCode::OK, 0..meta.size),
            RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r),
            RangeRequest::Unsatisfiable => return Err(GetPlan::Unsatisfiable(meta.size)),
        };
        if self.head_only || range.is_empty() {
            return Err(GetPlan::Empty(meta.size, status, range));
        }
        Ok((status, range))
    }
}

/// Serves the request from the read cache alone, without the blocking pool,
/// when the record and every chunk the range needs are cached.
fn plan_from_cache(store: &ObjectStore, meta: &ObjectMeta, ask: &Ask) -> Option<GetPlan> {
    let (status, range) = match ask.against(meta) {
        Ok(read) => read,
        Err(plan) => return Some(plan),
    };
    let got = store.cached_pieces(meta, range.clone())?;
    Some(GetPlan::Cached(meta.size, status, range, got))
}

/// A GET or HEAD with its record known: answered already, or a range
/// to read.
enum Settled {
    Plan(GetPlan),
    Read(Box<ToRead>),
}

struct ToRead {
    size: u64,
    status: StatusCode,
    range: std::ops::Range<u64>,
    reader: crate::store::ObjectReader,
}

/// Settles a GET or HEAD against the object's record: answered from it, or
/// a reader over the range.
fn settle(
    store: &ObjectStore,
    address: ContentAddress,
    meta: Arc<ObjectMeta>,
    ask: &Ask,
) -> Result<Settled, StoreError> {
    let (status, range) = match ask.against(&meta) {
        Ok(read) => read,
        Err(plan) => return Ok(Settled::Plan(plan)),
    };
    let size = meta.size;
    let (_, reader) = store.read_meta(&address, meta, Some(range.clone()))?;
    Ok(Settled::Read(Box::new(ToRead {
        size,
        status,
        range,
        reader,
    })))
}

/// Reads and verifies the first piece, and those in hand after it (fetched
/// with it from a bucket, or in RAM) up to 2 MiB: a small object is
/// served whole from here, a large one starts as soon as before.
fn first_pieces(read: ToRead) -> Result<GetPlan, StoreError> {
    let ToRead {
        size,
        status,
        range,
        mut reader,
    } = read;
    let mut first = vec![reader.next().transpose()?.unwrap_or_default()];
    while first.len() < FIRST_TRIP_PIECES && reader.in_hand() {
        first.extend(reader.next().transpose()?);
    }
    let rest = (reader.remaining() > 0).then_some(reader);
    Ok(GetPlan::Body(Box::new(BodyPlan {
        size,
        status,
        range,
        first,
        rest,
    })))
}

async fn get(api: Arc<StorageApi>, req: Request<ReqBody>, address: ContentAddress) -> Routed {
    let store = api.store.clone();
    // A cached record carries its rendered headers.
    let cached = store.cached_meta(&address);
    let (tag, whole) = match &cached {
        Some(meta) => {
            let r = rendered(meta);
            (r.etag.clone(), Some(r.length.clone()))
        }
        None => (etag(&address), None),
    };
    let tag_str = tag.to_str().unwrap_or_default();
    let ask = Ask {
        not_modified: if_none_match(&req, tag_str),
        range: effective_range(req.method(), req.headers(), tag_str).map(str::to_owned),
        head_only: req.method() == Method::HEAD,
    };
    // Otherwise the record, then the first pieces: read and verified
    // before answering, so a damaged object is a clean 500 rather than a
    // cut body whenever it can be. On redb that is one trip to the
    // blocking pool. With a bucket the record is the manifest, asked for
    // from here; the blocking pool is needed only when the first piece is
    // in a pack (an object of up to 1 MiB came whole with its manifest).
    let plan = match cached.and_then(|meta| plan_from_cache(&store, &meta, &ask)) {
        Some(plan) => Ok(plan),
        None if store.remote().is_some() => {
            let looked_up = match store.head_remote(&address).await {
                Ok(Some(meta)) => settle(&store, address, meta, &ask),
                Ok(None) => Err(StoreError::NotFound),
                Err(e) => Err(e),
            };
            match looked_up {
                Ok(Settled::Plan(plan)) => Ok(plan),
                Ok(Settled::Read(read)) if !read.reader.needs_io() => {
                    first_pieces(*read).map_err(|e| e.as_problem())
                }
                Ok(Settled::Read(read)) => blocking(move || first_pieces(*read)).await,
                Err(e) => Err(e.as_problem()),
            }
        }
        None => {
            blocking(move || {
                let meta = store.head_shared(&address)?.ok_or(StoreError::NotFound)?;
                match settle(&store, address, meta, &ask)? {
                    Settled::Plan(plan) => Ok(plan),
                    Settled::Read(read) => first_pieces(*read),
                }
            })
            .await
        }
    };
    let (size, status, range, body) = match plan {
        Err(p) => return problem(ROUTE_OBJECT, p),
        Ok(GetPlan::NotModified) => {
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            object_headers(&mut resp, &tag);
            return Routed::new(ROUTE_OBJECT, resp);
        }
        Ok(GetPlan::Unsatisfiable(size)) => {
            let mut resp = StoreError::RangeNotSatisfiable { size }
                .as_problem()
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Routed::new(ROUTE_OBJECT, resp);
        }
        Ok(GetPlan::Empty(size, status, range)) => (size, status, range, empty()),
        Ok(GetPlan::Cached(size, status, range, got)) => (size, status, range, pieces(got)),
        Ok(GetPlan::Body(plan)) => {
            let BodyPlan {
                size,
                status,
                range,
                first,
                rest,
            } = *plan;
            let body = match rest {
                None => pieces(first),
                Some(rest) => {
                    let (tx, body) = ChannelBody::channel(4);
                    tokio::task::spawn_blocking(move || {
                        for piece in first {
                            if tx.blocking_send(piece).is_err() {
                                return;
                            }
                        }
                        for piece in rest {
                            match piece {
                                Ok(b) => {
                                    if tx.blocking_send(b).is_err() {
                                        return; // client gone
                                    }
                                }
                                Err(e) => {
                                    tx.blocking_fail(Box::new(e));
                                    return;
                                }
                            }
                        }
                    });
                    body
                }
            };
            (size, status, range, body)
        }
    };
    let len = range.end - range.start;
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    object_headers(&mut resp, &tag);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let length = match whole {
        Some(v) if len == size => v,
        _ => HeaderValue::from(len),
    };
    h.insert(header::CONTENT_LENGTH, length);
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) =
            HeaderValue::from_str(&format!("bytes {}-{}/{}", range.start, range.end - 1, size))
        {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Routed::new(ROUTE_OBJECT, resp)
}

async fn delete(
    api: Arc<StorageApi>,
    req: Request<ReqBody>,
    peer: SocketAddr,
    address: ContentAddress,
) -> Routed {
    if let Some(p) = write_refusal(&api.settings.load(), &req, peer) {
        return problem(ROUTE_OBJECT, p);
    }
    let store = api.store.clone();
    match blocking(move || store.delete(&address)).await {
        Ok(true) => {
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            Routed::new(ROUTE_OBJECT, resp)
        }
        Ok(false) => problem(
            ROUTE_OBJECT,
            Problem::not_found("no object with that address"),
        ),
        Err(p) => problem(ROUTE_OBJECT, p),
    }
}

/// How often the role checks that its store still takes writes.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);
