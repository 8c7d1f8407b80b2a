//! Blob transfer (app protocol 2) on the node's side: what this node
//! serves from its store (`local_get`, read lazily as verified pieces) and
//! how it fetches from peers (`Overlay::fetch_with`, verified by the
//! consumer's hash before anything is kept; `fetch_into_store`).

use std::sync::Arc;

use bytes::Bytes;
use ron_kernel::handles::{ObjectSink, Objects};
use ron_kernel::HandleError;

use crate::error::OverlayError;
use crate::state::{Command, Overlay};

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

/// An object from the local store: its size and a reader of its verified
/// 64 KiB chunks (the store's chunk size is the blob frame size: each piece
/// is one frame, and nothing is concatenated). Nothing is read yet: the
/// session reads ahead of the peer's window, a few pieces at a time, so a
/// served object never sits in memory whole. `None` when it is not here;
/// refused when it is larger than `max` (the asker would drop it anyway).
pub(crate) fn local_get(
    overlay: &Overlay,
    address: &ron_kernel::ContentAddress,
    max: usize,
) -> Result<Option<(u64, Pieces)>, Refusal> {
    // Without storage in this node there is nothing to serve.
    let Ok(objects) = overlay.handles.get::<dyn Objects>() else {
        return Ok(None);
    };
    let store_error = |e: HandleError| Refusal::new(500, "store", e.to_string());
    let Some((size, reader)) = objects.read(address, None).map_err(store_error)? else {
        return Ok(None);
    };
    if size > max as u64 {
        return Err(Refusal::new(
            413,
            "too_large",
            format!("{size} bytes, above the overlay fetch limit {max}"),
        ));
    }
    Ok(Some((
        size,
        Box::new(reader.map(move |r| r.map_err(store_error))),
    )))
}

/// A fetch attempt's consumer: what it made of the bytes, and their
/// address (see [`Overlay::fetch_with`]).
pub type Consumer<T> =
    tokio::task::JoinHandle<Result<(T, ron_kernel::ContentAddress), OverlayError>>;

/// Stores the bytes of one fetch attempt as they arrive, in a blocking
/// task; when the sink closes, the writer (nothing committed yet) and the
/// address of what was written. The writer hashes what it stores anyway,
/// so this is the fetch's verification too, at no extra cost.
fn store_as_it_arrives(
    objects: Arc<dyn Objects>,
    mut pieces: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
) -> Consumer<Box<dyn ObjectSink>> {
    tokio::task::spawn_blocking(move || {
        let mut w = objects.writer();
        while let Some(piece) = pieces.blocking_recv() {
            if let Err(e) = w.write(&piece) {
                // This node's own failure (a full disk): no other peer is
                // asked, and the gateway answers 404, so say it here.
                tracing::warn!(error = %e, "storing an object fetched from a peer failed");
                return Err(OverlayError::Handle(e));
            }
        }
        let got = w.address();
        Ok((w, got))
    })
}

impl Overlay {
    /// Fetches `address` from connected peers, one after the other (the one
    /// that announced it first), until one delivers bytes that hash to it.
    ///
    /// For each attempt `attempt` starts a consumer of the frames' payloads
    /// (in order, as they arrive, not yet verified) and returns the channel
    /// that feeds it. When the channel closes the consumer returns what it
    /// made and the BLAKE3 address of the bytes it consumed (consumers hash
    /// as they go, off the session's task, and a store writer hashes
    /// anyway). Its result is returned only when that address is the one
    /// asked for; a peer whose bytes hash to anything else is disconnected
    /// (`rejected_total{reason="blob_mismatch"}`) and the consumer's result
    /// is dropped, so it must not have made anything visible.
    pub async fn fetch_with<T, F>(
        &self,
        address: ron_kernel::ContentAddress,
        mut attempt: F,
    ) -> Result<T, OverlayError>
    where
        F: FnMut() -> (tokio::sync::mpsc::UnboundedSender<Bytes>, Consumer<T>),
    {
        let mut links = self.peer_links();
        // The peer that announced this object (if any) is asked first.
        if let Some(holder) = self.hints.get(&address.to_string()) {
            links.sort_by_key(|(peer, _)| *peer != holder);
        }
        if links.is_empty() {
            return Err(OverlayError::NoPeer);
        }
        let mut last = OverlayError::NoPeer;
        for (peer, tx) in links {
            let (reply, complete) = tokio::sync::oneshot::channel();
            let (sink, consumer) = attempt();
            let fetch = Command::Fetch {
                address,
                sink,
                reply,
            };
            if tx.send(fetch).await.is_err() {
                // The command (and the sink in it) is dropped: the
                // consumer ends.
                let _ = consumer.await;
                continue;
            }
            let complete = complete.await;
            // The session has dropped the sink: the consumer ends.
            let consumed = consumer.await?;
            match complete {
                Ok(Ok(())) => {
                    // A consumer that failed (a full disk) is this node's
                    // problem, not the peer's: no other peer is asked.
                    let (out, got) = consumed?;
                    if got == address {
                        tracing::info!(%address, %peer, "overlay fetched an object");
                        return Ok(out);
                    }
                    let detail =
                        format!("{peer} sent corrupt bytes for {address} (they hash to {got})");
                    let _ = tx
                        .send(Command::Corrupt {
                            detail: detail.clone(),
                        })
                        .await;
                    last = OverlayError::Corrupt(detail);
                }
                Ok(Err(e)) => {
                    tracing::info!(%address, %peer, error = %e, "overlay fetch from a peer failed");
                    last = e;
                }
                Err(_) => last = OverlayError::SessionEnded,
            }
        }
        Err(last)
    }

    /// Fetches `address` from peers straight into the local store: pieces
    /// are written as they arrive (nothing holds the whole object), and
    /// the object is committed only once the bytes are verified.
    pub async fn fetch_into_store(
        &self,
        address: ron_kernel::ContentAddress,
    ) -> Result<(), HandleError> {
        let objects = self.handles.get::<dyn Objects>()?;
        let writer = self
            .fetch_with(address, || {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (tx, store_as_it_arrives(objects.clone(), rx))
            })
            .await?;
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(HandleError::failed)?
            .map(|_| ())
            .inspect_err(|e| {
                tracing::warn!(%address, error = %e, "storing an object fetched from a peer failed");
            })
    }
}
