//! The decompression guard: request bodies sent with `Content-Encoding:
//! gzip` or `zstd` are inflated on the way to the downstream, never past
//! the body cap and never past 10× the bytes that arrived.
//!
//! Invariant: the inflated bytes held at any moment are bounded by the
//! limit: the decoder writes into a sink that refuses to grow past it, so a
//! 100 KiB bomb costs the node at most the cap, not 100 MiB.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use hyper::body::{Body, Frame};
use ron_kernel::http::{BoxError, ReqBody};
use ron_kernel::metrics::names;
use ron_kernel::request::BodyRefused;
use ron_kernel::Problem;

/// Inflated bytes may be at most this many times the encoded bytes.
pub const MAX_RATIO: u64 = 10;
/// Encoded input is fed to the decoder in slices of this size, so no
/// single step can blow far past a limit before it is checked.
const SLICE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Zstd,
}

/// What the `Content-Encoding` header asks for: nothing to do, an encoding
/// we inflate, or a refusal (415 for stacked or unknown encodings).
pub fn requested(headers: &HeaderMap) -> Result<Option<Encoding>, Problem> {
    let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let unsupported = |what: &str| {
        Problem::unsupported_encoding(
            format!("{what}; send gzip, zstd or an unencoded body"),
            "gzip, zstd",
        )
    };
    if values.next().is_some() {
        return Err(unsupported("stacked content encodings are refused"));
    }
    let v = first
        .to_str()
        .map_err(|_| unsupported("unreadable Content-Encoding"))?
        .trim()
        .to_ascii_lowercase();
    if v.contains(',') {
        return Err(unsupported("stacked content encodings are refused"));
    }
    match v.as_str() {
        "" | "identity" => Ok(None),
        "gzip" | "x-gzip" => Ok(Some(Encoding::Gzip)),
        "zstd" => Ok(Some(Encoding::Zstd)),
        other => Err(unsupported(&format!("unknown content encoding {other:?}"))),
    }
}

/// A sink that refuses to hold more than `limit` bytes.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
    /// Set once a write was refused for the limit.
    tripped: bool,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.tripped = true;
            return Err(std::io::Error::other(OverLimit));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct OverLimit;

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("inflated body over its limit")
    }
}

impl std::error::Error for OverLimit {}

enum Decoder {
    Gzip(flate2::write::GzDecoder<Capped>),
    Zstd(zstd::stream::write::Decoder<'static, Capped>),
}

impl Decoder {
    fn sink(&mut self) -> &mut Capped {
        match self {
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Zstd(d) => d.get_mut(),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Decoder::Gzip(d) => d.write_all(data),
            Decoder::Zstd(d) => d.write_all(data),
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        match self {
            Decoder::Gzip(d) => d.try_finish(),
            Decoder::Zstd(d) => d.flush(),
        }
    }
}

/// The inflating body.
pub struct Inflate {
    inner: ReqBody,
    dec: Decoder,
    cap: u64,
    encoded: u64,
    inflated: u64,
    done: bool,
}

impl Inflate {
    pub fn new(inner: ReqBody, enc: Encoding, cap: u64) -> Result<Self, Problem> {
        let sink = Capped {
            buf: Vec::new(),
            limit: 0,
            tripped: false,
        };
        let dec = match enc {
            Encoding::Gzip => Decoder::Gzip(flate2::write::GzDecoder::new(sink)),
            Encoding::Zstd => Decoder::Zstd(
                zstd::stream::write::Decoder::new(sink)
                    .map_err(|e| Problem::internal(format!("zstd decoder: {e}")))?,
            ),
        };
        Ok(Self {
            inner,
            dec,
            cap,
            encoded: 0,
            inflated: 0,
            done: false,
        })
    }

    fn refuse(&mut self, p: Problem) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        Poll::Ready(Some(Err(Box::new(BodyRefused(p)))))
    }

    fn too_large(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        metrics::counter!(names::REJECTED_TOTAL, "reason" => "decompress").increment(1);
        let p = Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "decompress",
            format!(
                "the body inflates past {} bytes or {}x its encoded size",
                self.cap, MAX_RATIO
            ),
        );
        self.refuse(p)
    }

    fn corrupt(&mut self, e: std::io::Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let p = Problem::bad_request("bad_encoding", format!("the encoded body is damaged: {e}"));
        self.refuse(p)
    }

    /// How much inflated output the decoder may produce in total now.
    fn limit(&self) -> u64 {
        self.cap.min(self.encoded.saturating_mul(MAX_RATIO))
    }

    fn take_output(&mut self) -> Option<Bytes> {
        let buf = std::mem::take(&mut self.dec.sink().buf);
        self.inflated += buf.len() as u64;
        (!buf.is_empty()).then(|| Bytes::from(buf))
    }

    /// Sets the sink's room so that everything inflated so far, taken or
    /// not, stays within the limit.
    fn set_room(&mut self) {
        let room = self.limit().saturating_sub(self.inflated);
        self.dec.sink().limit = usize::try_from(room).unwrap_or(usize::MAX);
    }

    fn feed(&mut self, data: &[u8]) -> std::io::Result<()> {
        for slice in data.chunks(SLICE) {
            self.encoded += slice.len() as u64;
            self.set_room();
            self.dec.write_all(slice)?;
        }
        Ok(())
    }

    fn fail(&mut self, e: std::io::Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.dec.sink().tripped {
            self.too_large()
        } else {
            self.corrupt(e)
        }
    }
}

impl Body for Inflate {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers are dropped; only data is inflated.
                    if let Ok(data) = frame.into_data() {
                        if let Err(e) = this.feed(&data) {
                            return this.fail(e);
                        }
                        if let Some(out) = this.take_output() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.done = true;
                    this.set_room();
                    if let Err(e) = this.dec.finish() {
                        return this.fail(e);
                    }
                    return Poll::Ready(this.take_output().map(|b| Ok(Frame::data(b))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    async fn inflate(enc: Encoding, body: Vec<u8>, cap: u64) -> Result<Bytes, Problem> {
        let inner = ron_kernel::http::req_body(Full::new(Bytes::from(body)));
        let mut b = Inflate::new(inner, enc, cap)?;
        let mut out = Vec::new();
        while let Some(f) = b.frame().await {
            match f {
                Ok(f) => out.extend_from_slice(f.data_ref().unwrap()),
                Err(e) => return Err(e.downcast_ref::<BodyRefused>().unwrap().0.clone()),
            }
        }
        Ok(out.into())
    }

    #[tokio::test]
    async fn inflates_within_limits() {
        let text: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let got = inflate(Encoding::Gzip, gzip(&text), 1 << 20).await.unwrap();
        assert_eq!(&got[..], &text[..]);
        let z = zstd::encode_all(&text[..], 3).unwrap();
        let got = inflate(Encoding::Zstd, z, 1 << 20).await.unwrap();
        assert_eq!(&got[..], &text[..]);
    }

    #[tokio::test]
    async fn a_bomb_is_refused_without_inflating_it() {
        let zeros = vec![0u8; 20 << 20];
        let bomb = gzip(&zeros);
        let p = inflate(Encoding::Gzip, bomb, 1 << 20).await.unwrap_err();
        assert_eq!(p.status, 413);
        assert_eq!(p.reason, "decompress");
        let z = zstd::encode_all(&zeros[..], 19).unwrap();
        let p = inflate(Encoding::Zstd, z, 1 << 20).await.unwrap_err();
        assert_eq!(p.reason, "decompress");
    }

    #[tokio::test]
    async fn garbage_is_a_bad_request() {
        let p = inflate(Encoding::Gzip, b"not gzip at all".to_vec(), 1 << 20)
            .await
            .unwrap_err();
        assert_eq!(p.status, 400);
    }

    #[test]
    fn stacked_and_unknown_encodings_are_415() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, "gzip, zstd".parse().unwrap());
        assert_eq!(requested(&h).unwrap_err().status, 415);
        h.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        assert_eq!(requested(&h).unwrap_err().status, 415);
        h.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(requested(&h).unwrap(), Some(Encoding::Gzip));
        h.append(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(requested(&h).unwrap_err().status, 415);
    }
}
