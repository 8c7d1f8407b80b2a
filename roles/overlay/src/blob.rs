//! Blob transfer (app protocol 2), verified as it streams.
//!
//! The asker names an object and optionally a byte range
//! ([`BlobRequest`]). The holder answers with the object's size (8 bytes,
//! little-endian), the proof for the pieces it sends (`kernel::outboard`:
//! the parent pairs from the address down to them) and then the bytes:
//! the range rounded out to 1 KiB chunks, and always the object's last
//! chunk, which proves the size; at most one 64 KiB group per frame. The
//! asker checks the whole proof against the address before it takes a
//! byte of data, then each piece (a whole group, or a subtree of a group
//! the range ends in) against the hash the proof gave it as it arrives; a
//! holder that sends one wrong byte is caught within one group, disconnected
//! (`rejected_total{reason="blob_mismatch"}`), and nothing after the last
//! good group is used. What the asker does with verified groups is a
//! [`GroupSink`]: store them ([`Overlay::fetch_into_store`]), stream a
//! range of them ([`Overlay::fetch_range`]), or count them (benches). A
//! fetch that a peer leaves unfinished resumes at the next peer from the
//! first group the sink still lacks.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ron_kernel::chaos::{Target, CHAOS};
use ron_kernel::handles::{ObjectSink, Objects, OpenObject};
use ron_kernel::outboard::{self, Expect, GROUP_BYTES};
use ron_kernel::{ContentAddress, HandleError};
use serde::{Deserialize, Serialize};

use crate::error::OverlayError;
use crate::proto::BLOB_FRAME;
use crate::state::{Command, Overlay, Partial};

/// Why this node does not serve a request; sent as the stream's ERROR.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: u16,
    pub reason: &'static str,
    pub detail: String,
}

impl Refusal {
    pub(crate) fn new(status: u16, reason: &'static str, detail: impl Into<String>) -> Self {
        Refusal {
            status,
            reason,
            detail: detail.into(),
        }
    }
}

/// An object in the local store, read lazily: its verified pieces, in
/// order, as the stream's window asks for them.
pub(crate) type Pieces = Box<dyn Iterator<Item = Result<Bytes, Refusal>> + Send>;

/// The START payload of a blob request (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobRequest {
    /// `b3:<hex>`.
    pub address: String,
    /// Bytes `[start, end)` (an `end` past the object is its end); the
    /// whole object when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[u64; 2]>,
}

/// What a holder sends for a blob request: the `head` frames (size and
/// proof), then `len` bytes of groups read lazily from its store.
pub(crate) struct BlobAnswer {
    pub head: Vec<Bytes>,
    pub len: u64,
    pub groups: Pieces,
}

/// The holder's answer to a blob request (blocking: the store). `None`
/// when the object is not here; refused when the bytes asked for exceed
/// `max`.
pub(crate) fn serve_blob(
    overlay: &Overlay,
    request: &[u8],
    max: usize,
) -> Result<Option<BlobAnswer>, Refusal> {
    let bad = |d: String| Refusal::new(400, "bad_request", d);
    let req: BlobRequest = serde_json::from_slice(request).map_err(|e| bad(e.to_string()))?;
    let address = ContentAddress::parse(&req.address).map_err(|e| bad(e.to_string()))?;
    // Without storage in this node there is nothing to serve.
    let Ok(objects) = overlay.handles.get::<dyn Objects>() else {
        return Ok(None);
    };
    let store_error = |e: HandleError| Refusal::new(500, "store", e.to_string());
    let Some(tree) = objects.tree(&address).map_err(store_error)? else {
        return Ok(None);
    };
    // Its record looked up once for every read below.
    let Some(object) = objects.open(&address).map_err(store_error)? else {
        return Ok(None); // deleted meanwhile
    };
    let size = tree.size();
    let range = req.range.map(|[a, b]| a..b);
    let runs = outboard::runs(size, range.clone());
    let len: u64 = runs.iter().map(|r| r.end - r.start).sum();
    if len > max as u64 {
        return Err(Refusal::new(
            413,
            "too_large",
            format!("{len} bytes asked for, above the overlay fetch limit {max}"),
        ));
    }
    let mut head = size.to_le_bytes().to_vec();
    // Where the range ends inside a group, the pairs below it are hashed
    // from that group's bytes (read verified, as every read is).
    let group = |g: u64| read_all(&*object, g * GROUP_BYTES..((g + 1) * GROUP_BYTES).min(size));
    head.extend_from_slice(&tree.proof(&outboard::ranges_for(size, range), group)?);
    let head = Bytes::from(head);
    let head = (0..head.len())
        .step_by(BLOB_FRAME)
        .map(|at| head.slice(at..(at + BLOB_FRAME).min(head.len())))
        .collect();
    // Each run read from the store as its verified chunks, lazily: the
    // first now, the next when the stream gets there.
    let mut runs = runs.into_iter();
    let first: Pieces = match runs.next() {
        None => Box::new(std::iter::empty()),
        Some(r) => Box::new(
            object
                .read(r)
                .map_err(store_error)?
                .map(move |r| r.map_err(store_error)),
        ),
    };
    let rest = runs.flat_map(move |r| -> Pieces {
        match object.read(r) {
            Ok(reader) => Box::new(reader.map(move |r| r.map_err(store_error))),
            Err(e) => Box::new(std::iter::once(Err(store_error(e)))),
        }
    });
    let groups: Pieces = Box::new(first.chain(rest));
    Ok(Some(BlobAnswer { head, len, groups }))
}

/// Bytes `range` of an opened object, whole (a group: one chunk).
fn read_all(object: &dyn OpenObject, range: Range<u64>) -> Result<Bytes, Refusal> {
    let store_error = |e: HandleError| Refusal::new(500, "store", e.to_string());
    let mut pieces = object
        .read(range)
        .map_err(store_error)?
        .collect::<Result<Vec<Bytes>, _>>()
        .map_err(store_error)?;
    Ok(match pieces.len() {
        1 => pieces.remove(0),
        _ => pieces.concat().into(),
    })
}

/// What a fetch does with the pieces it receives, each verified, in order.
pub trait GroupSink: Send + 'static {
    /// The object's size, proved (before any group; again on a resumed
    /// attempt).
    fn sized(&mut self, size: u64) -> Result<(), OverlayError>;
    /// A verified piece: a whole group, or a subtree of one where the
    /// range asked for ends inside it (one the sink already has may come
    /// again).
    fn group(&mut self, g: &Expect, data: Bytes) -> Result<(), OverlayError>;
    /// The bytes still wanted: the whole request before the size is known,
    /// `None` once the sink has all it wants.
    fn wanted(&self) -> Option<Range<u64>>;
}

/// How an attempt at one peer ended, on the asker's side.
enum Fail {
    /// The peer's bytes did not verify: disconnect it.
    Corrupt(String),
    /// The answer stopped short (the session says why).
    Short,
    /// This node failed (a full disk): no other peer is asked.
    Local(OverlayError),
}

/// The payloads of one answer, read as a byte stream: whole frames are
/// handed on without a copy when a read wants exactly what one holds.
struct Stream {
    frames: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
    pending: Bytes,
}

impl Stream {
    fn take(&mut self, n: usize) -> Result<Bytes, Fail> {
        while self.pending.is_empty() && n > 0 {
            self.pending = self.frames.blocking_recv().ok_or(Fail::Short)?;
        }
        if self.pending.len() >= n {
            return Ok(self.pending.split_to(n));
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            if self.pending.is_empty() {
                self.pending = self.frames.blocking_recv().ok_or(Fail::Short)?;
            }
            let k = (n - out.len()).min(self.pending.len());
            out.extend_from_slice(&self.pending.split_to(k));
        }
        Ok(out.freeze())
    }

    /// Whether anything is left after the answer's last byte.
    fn has_more(&mut self) -> bool {
        !self.pending.is_empty() || self.frames.blocking_recv().is_some_and(|b| !b.is_empty())
    }
}

/// Verifies one answer for bytes `range` of `address` as it arrives and
/// hands each good group to `sink` (blocking: runs off the session task,
/// so reading and hashing use both cores). One BLAKE3 pass per byte.
fn verify_answer<S: GroupSink>(
    address: &ContentAddress,
    range: Option<Range<u64>>,
    max: u64,
    frames: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
    sink: &mut S,
    hashed: &mut u64,
) -> Result<(), Fail> {
    let mut s = Stream {
        frames,
        pending: Bytes::new(),
    };
    let head = s.take(8)?;
    let mut le = [0u8; 8];
    le.copy_from_slice(&head);
    let size = u64::from_le_bytes(le);
    // What the claimed size implies is bounded before any work is done
    // for it (the holder refuses the same with 413).
    let runs = outboard::runs(size, range.clone());
    if runs.iter().map(|r| r.end - r.start).sum::<u64>() > max {
        return Err(Fail::Local(OverlayError::TooLarge));
    }
    let ranges = outboard::ranges_for(size, range);
    let proof = s.take(outboard::proof_len(size, &ranges))?;
    let expect = outboard::check_proof(address.as_bytes(), size, &ranges, &proof)
        .map_err(|e| Fail::Corrupt(format!("its proof for {address} failed: {e}")))?;
    sink.sized(size).map_err(Fail::Local)?;
    for e in &expect {
        let data = s.take(e.len)?;
        *hashed += data.len() as u64;
        if !e.verify(&data) {
            return Err(Fail::Corrupt(format!(
                "its bytes {}..{} of {address} do not match the address",
                e.offset(),
                e.offset() + e.len as u64
            )));
        }
        sink.group(e, data).map_err(Fail::Local)?;
    }
    if s.has_more() {
        return Err(Fail::Corrupt(format!(
            "it sent more than its answer for {address} holds"
        )));
    }
    Ok(())
}

impl Overlay {
    /// Fetches what `sink` wants of `address` from connected peers, one
    /// after the other (the one that announced it first), each attempt
    /// asking for what the sink still lacks, until it has all of it.
    /// A peer whose bytes do not verify is disconnected
    /// (`rejected_total{reason="blob_mismatch"}`); what it sent before the
    /// bad group was verified and stays with the sink.
    pub async fn fetch_groups<S: GroupSink>(
        &self,
        address: ContentAddress,
        mut sink: S,
    ) -> Result<S, FetchFailed<S>> {
        let mut links = self.peer_links();
        // The peer that announced this object (if any) is asked first.
        if let Some(holder) = self.hints.get(&address.to_string()) {
            links.sort_by_key(|(peer, _)| *peer != holder);
        }
        let mut last = OverlayError::NoPeer;
        let max = self.limits.fetch_max_bytes as u64;
        for (peer, tx) in links {
            let Some(want) = sink.wanted() else {
                return Ok(sink);
            };
            // A drill's fault on the peer edge: its latency delays this
            // attempt, its error fails it as a refusing peer would.
            if let Err(e) = CHAOS.at(Target::Peer).await {
                last = OverlayError::Refused(e.to_string());
                tracing::info!(%address, %peer, error = %last, "overlay fetch from a peer failed");
                continue;
            }
            let range = (want != (0..u64::MAX)).then_some(want);
            let request = BlobRequest {
                address: address.to_string(),
                range: range.clone().map(|r| [r.start, r.end]),
            };
            let request = Bytes::from(serde_json::to_vec(&request).unwrap_or_default());
            let (reply, complete) = tokio::sync::oneshot::channel();
            let (frames, rx) = tokio::sync::mpsc::unbounded_channel();
            let verify = tokio::task::spawn_blocking(move || {
                let mut hashed = 0;
                let r = verify_answer(&address, range, max, rx, &mut sink, &mut hashed);
                (sink, r, hashed)
            });
            let fetch = Command::Fetch {
                request,
                sink: frames,
                reply,
            };
            // A session that is gone drops the command (and the frame
            // channel in it): the verifier ends short.
            let _ = tx.send(fetch).await;
            let complete = complete.await;
            let (back, verified) = match verify.await {
                Ok((sink, r, hashed)) => {
                    self.verified_bytes
                        .fetch_add(hashed, std::sync::atomic::Ordering::Relaxed);
                    (sink, r)
                }
                // The verifier panicked: the sink is gone with it.
                Err(e) => {
                    return Err(FetchFailed {
                        error: e.into(),
                        sink: None,
                    })
                }
            };
            sink = back;
            match verified {
                Ok(()) => {}
                Err(Fail::Local(error)) => {
                    return Err(FetchFailed {
                        error,
                        sink: Some(sink),
                    })
                }
                Err(Fail::Corrupt(why)) => {
                    let detail = format!("{peer}: {why}");
                    let _ = tx
                        .send(Command::Corrupt {
                            detail: detail.clone(),
                        })
                        .await;
                    last = OverlayError::Corrupt(detail);
                    continue;
                }
                Err(Fail::Short) => {
                    last = match complete {
                        Ok(Err(e)) => e,
                        _ => OverlayError::SessionEnded,
                    };
                    tracing::info!(%address, %peer, error = %last, "overlay fetch from a peer failed");
                    continue;
                }
            }
            if sink.wanted().is_none() {
                tracing::info!(%address, %peer, "overlay fetched an object");
                return Ok(sink);
            }
        }
        if sink.wanted().is_none() {
            return Ok(sink);
        }
        Err(FetchFailed {
            error: last,
            sink: Some(sink),
        })
    }

    /// Fetches `address` from peers straight into the local store: each
    /// group is verified once as it arrives and stored under the hash
    /// that verified it (no second pass), and the object is committed
    /// only once whole. A fetch every peer left short keeps what verified
    /// (`Partials`) and the next fetch of the address resumes from there.
    pub async fn fetch_into_store(&self, address: ContentAddress) -> Result<(), HandleError> {
        let objects = self.handles.get::<dyn Objects>()?;
        let max = self.limits.fetch_max_bytes as u64;
        let sink = match self.partials.take(&address) {
            Some(p) => {
                tracing::info!(%address, bytes = p.groups * GROUP_BYTES, "overlay fetch resumes a partial object");
                StoreSink {
                    writer: Some(p.writer),
                    size: Some(p.size),
                    next: p.groups,
                    max,
                }
            }
            None => StoreSink {
                writer: Some(objects.writer()),
                size: None,
                next: 0,
                max,
            },
        };
        let mut sink = match self.fetch_groups(address, sink).await {
            Ok(sink) => sink,
            Err(FetchFailed { error, sink }) => {
                // Writers go on the blocking pool: a dropped one removes
                // the chunks it stored.
                let mut dropped: Vec<Box<dyn ObjectSink>> = Vec::new();
                match sink {
                    Some(StoreSink {
                        writer: Some(writer),
                        size: Some(size),
                        next,
                        ..
                    }) if next > 0 && !matches!(error, OverlayError::Handle(_)) => {
                        tracing::info!(%address, bytes = next * GROUP_BYTES, "overlay fetch keeps a partial object");
                        let p = Partial {
                            writer,
                            groups: next,
                            size,
                        };
                        dropped
                            .extend(self.partials.park(address, p).into_iter().map(|p| p.writer));
                    }
                    Some(StoreSink {
                        writer: Some(writer),
                        ..
                    }) => dropped.push(writer),
                    _ => {}
                }
                if !dropped.is_empty() {
                    tokio::task::spawn_blocking(move || drop(dropped));
                }
                return Err(error.into());
            }
        };
        let writer = sink.writer.take();
        let stored = tokio::task::spawn_blocking(move || match writer {
            Some(w) if w.address() == address => w.finish().map(|_| ()),
            _ => Err(HandleError::Failed(format!(
                "the fetched object does not hash to {address}"
            ))),
        })
        .await
        .map_err(HandleError::failed)?;
        stored.inspect_err(|e| {
            tracing::warn!(%address, error = %e, "storing an object fetched from a peer failed");
        })
    }

    /// Bytes `range` of `address` (to its end when `range.end` is past it)
    /// from peers, verified group by group and streamed as they arrive;
    /// nothing is stored. Resolves once the range's first piece verified
    /// (or a peer proved the range is past the object's end) with the
    /// object's size and a channel of the range's bytes in order (an `Err`
    /// in it ends the stream early).
    pub async fn fetch_range(
        self: &Arc<Self>,
        address: ContentAddress,
        range: Range<u64>,
    ) -> Result<(u64, RangeStream), OverlayError> {
        let (bytes, rx) = tokio::sync::mpsc::channel(8);
        let (size_tx, size_rx) = tokio::sync::oneshot::channel();
        let sink = RangeSink {
            range,
            sent_to: None,
            size: None,
            size_tx: Some(size_tx),
            bytes: bytes.clone(),
        };
        let ov = self.clone();
        let task = tokio::spawn(async move {
            if let Err(FetchFailed { error, .. }) = ov.fetch_groups(address, sink).await {
                // After the size went out, the reader learns it here.
                let _ = bytes.send(Err(error.to_string().into())).await;
                return Err(error);
            }
            Ok(())
        });
        match size_rx.await {
            Ok(size) => Ok((size, rx)),
            Err(_) => match task.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(OverlayError::SessionEnded),
                Err(e) => Err(e.into()),
            },
        }
    }
}

/// A fetch no peer completed: why (the last peer's failure), and the sink
/// with what did verify (`None` if it was lost with a panicked task).
pub struct FetchFailed<S> {
    pub error: OverlayError,
    pub sink: Option<S>,
}

/// The bytes of a range fetch, in order (`Err`: the fetch failed after the
/// size was known).
pub type RangeStream = ron_kernel::handles::PeerBytes;

/// Groups into a store writer, in order, under the hashes that verified
/// them.
struct StoreSink {
    writer: Option<Box<dyn ObjectSink>>,
    size: Option<u64>,
    /// The next group the writer takes.
    next: u64,
    max: u64,
}

impl GroupSink for StoreSink {
    fn sized(&mut self, size: u64) -> Result<(), OverlayError> {
        if size > self.max {
            return Err(OverlayError::TooLarge);
        }
        self.size = Some(size);
        Ok(())
    }

    fn group(&mut self, g: &Expect, data: Bytes) -> Result<(), OverlayError> {
        if g.offset() < self.next * GROUP_BYTES {
            return Ok(()); // had it already
        }
        // Asked from a group boundary to the end, every piece is a whole
        // group, in order.
        let size = self.size.unwrap_or(0);
        if g.group(size) != Some(self.next) {
            return Err(OverlayError::Protocol(format!(
                "a piece at byte {} where group {} was due",
                g.offset(),
                self.next
            )));
        }
        let w = self.writer.as_mut().ok_or(OverlayError::SessionEnded)?;
        w.write_verified(data, g.hash).inspect_err(|e| {
            // This node's own failure (a full disk): no other peer is
            // asked, and the gateway answers 404, so say it here.
            tracing::warn!(error = %e, "storing an object fetched from a peer failed");
        })?;
        self.next += 1;
        Ok(())
    }

    fn wanted(&self) -> Option<Range<u64>> {
        match self.size {
            None => Some(0..u64::MAX),
            Some(size) => {
                (self.next < outboard::groups(size)).then(|| self.next * GROUP_BYTES..size)
            }
        }
    }
}

/// The bytes of one range, streamed as their groups verify.
struct RangeSink {
    range: Range<u64>,
    /// Where the stream is (`None`: nothing sent yet).
    sent_to: Option<u64>,
    size: Option<u64>,
    size_tx: Option<tokio::sync::oneshot::Sender<u64>>,
    bytes: tokio::sync::mpsc::Sender<Result<Bytes, ron_kernel::http::BoxError>>,
}

impl RangeSink {
    fn end(&self) -> u64 {
        self.size.map_or(self.range.end, |s| self.range.end.min(s))
    }
}

impl RangeSink {
    /// Resolves the fetch's first step: with the range's first verified
    /// bytes (a peer whose first piece fails has the gateway answer as if
    /// the object were nowhere), or at once when the range holds none.
    fn ready(&mut self) {
        if let (Some(tx), Some(size)) = (self.size_tx.take(), self.size) {
            let _ = tx.send(size);
        }
    }
}

impl GroupSink for RangeSink {
    fn sized(&mut self, size: u64) -> Result<(), OverlayError> {
        self.size = Some(size);
        if self.range.start >= self.end() {
            self.ready();
        }
        Ok(())
    }

    fn group(&mut self, g: &Expect, data: Bytes) -> Result<(), OverlayError> {
        let from = self.sent_to.unwrap_or(self.range.start).max(g.offset());
        let to = self.end().min(g.offset() + g.len as u64);
        if from >= to {
            return Ok(()); // outside the range (the size proof), or sent
        }
        let piece = data.slice((from - g.offset()) as usize..(to - g.offset()) as usize);
        self.ready();
        // The reader went away (the client hung up): stop fetching.
        self.bytes
            .blocking_send(Ok(piece))
            .map_err(|_| OverlayError::SessionEnded)?;
        self.sent_to = Some(to);
        Ok(())
    }

    fn wanted(&self) -> Option<Range<u64>> {
        let from = self.sent_to.unwrap_or(self.range.start);
        match self.size {
            None => Some(self.range.clone()),
            Some(_) => (from < self.end()).then(|| from..self.end()),
        }
    }
}
