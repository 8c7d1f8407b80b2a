//! The driver of one OAP/1 session over any byte stream (TLS/TCP or a
//! QUIC stream): it moves bytes between the stream and the session's
//! state (`sansio::SessionCore`, which does no I/O and reads no clock),
//! runs one timer at the state's deadline, and does the work the state
//! asks of the node (`dispatch`: register the session, look requests up
//! and read blobs on the blocking pool, hand over gossip and synced
//! registry versions).
//!
//! One future polls both directions of the stream, so a peer that is slow
//! to read never stops this side from reading. The stream is not split:
//! tokio's split puts a blocking mutex between the halves and both
//! directions of a TLS stream need the one rustls connection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::BytesMut;
use ron_kernel::metrics::{names, GaugeGuard};
use ron_oap::HEADER_LEN;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::blob::{serve_blob, Refusal};
use crate::error::{OverlayError, Result};
use crate::identity::hex;
use crate::proto::{PROTO_BLOB, PROTO_SYNC};
use crate::sansio::{read_ahead, Action, Outgoing, Served, SessionCore, WRITE_SLICES};
use crate::state::{handshake, Command, Direction, Overlay, SessionInfo, Transport};

pub use crate::proto::PROTO_PING;
pub use crate::sansio::CLOSE_REASONS;

/// What the stream did: read some bytes (0: the peer closed), or failed
/// to take queued frames.
enum Io {
    Read(std::io::Result<usize>),
    WriteFailed(std::io::Error),
}

/// Writes what the core has queued until the stream would block; flushes
/// once everything is written. `Ready(Ok)` when nothing is left.
fn poll_transmit<W: AsyncWrite + Unpin>(
    core: &mut SessionCore,
    w: &mut W,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    loop {
        let mut iov = [std::io::IoSlice::new(&[]); WRITE_SLICES];
        let (n_iov, bytes) = core.transmit(&mut iov);
        if n_iov == 0 {
            break;
        }
        let n = ready!(Pin::new(&mut *w).poll_write_vectored(cx, &iov[..n_iov]))?;
        if n == 0 && bytes > 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        core.on_written(Instant::now(), n);
    }
    if core.needs_flush() {
        ready!(Pin::new(&mut *w).poll_flush(cx))?;
    }
    core.on_flushed();
    Poll::Ready(Ok(()))
}

pub async fn run_session<S>(
    overlay: Arc<Overlay>,
    mut stream: S,
    addr: SocketAddr,
    key: [u8; 32],
    kex: String,
    direction: Direction,
    transport: Transport,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let since = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let (peer, at) = (hex(&key), addr.to_string());
    let info = SessionInfo::new(peer, at, transport, direction, kex.clone(), since);
    let info = Arc::new(info);
    let node_id = overlay.identity.node_id();
    let (now, oap) = (Instant::now(), overlay.oap.clone());
    let mut core = SessionCore::new(now, overlay.limits, &node_id, key, info.clone(), oap);
    let mut link = Link {
        overlay: overlay.clone(),
        conn_id: overlay.next_conn_id(),
        info,
        kex,
        unpinned: tokio_util::sync::CancellationToken::new(),
        commands: mpsc::channel::<Command>(64),
        served: mpsc::channel::<Served>(64),
        up: None,
    };
    let mut buf = BytesMut::new();
    let mut need = HEADER_LEN;
    let timer = tokio::time::sleep_until(core.poll_timeout().into());
    tokio::pin!(timer);
    let result: Result<()> = loop {
        while let Some(action) = core.poll_action() {
            link.dispatch(action);
        }
        if let Some((was, now)) = core.inflight_change() {
            overlay.add_inflight(was, now);
        }
        timer.as_mut().reset(core.poll_timeout().into());
        // Room for the rest of the frame being read (whole, so decoding
        // slices it without a copy), at least 8 KiB. (Larger buffers, for
        // several frames per read, measured slower: the allocator maps and
        // unmaps them.)
        let want = need.max(8 * 1024);
        if buf.capacity() - buf.len() < want {
            buf.reserve(want);
        }
        let up = core.is_up();
        let io = std::future::poll_fn(|cx| {
            if let Poll::Ready(Err(e)) = poll_transmit(&mut core, &mut stream, cx) {
                return Poll::Ready(Io::WriteFailed(e));
            }
            tokio_util::io::poll_read_buf(Pin::new(&mut stream), cx, &mut buf).map(Io::Read)
        });
        let step = tokio::select! {
            _ = overlay.shutdown.cancelled() => break Ok(()),
            _ = link.unpinned.cancelled() => {
                crate::sansio::closed("unpinned");
                Err(OverlayError::Unpinned)
            }
            r = io => match r {
                Io::Read(Ok(0)) => {
                    core.handle_eof(&buf);
                    break Ok(());
                }
                Io::Read(Ok(_)) => core.handle_input(Instant::now(), &mut buf).map(|n| need = n),
                Io::Read(Err(e)) | Io::WriteFailed(e) => Err(e.into()),
            },
            _ = &mut timer => {
                if buf.is_empty() {
                    // Quiet: give the read buffer back.
                    buf = BytesMut::new();
                }
                core.handle_timeout(Instant::now())
            }
            Some(cmd) = link.commands.1.recv(), if up => {
                core.handle_command(Instant::now(), cmd)
            }
            Some(served) = link.served.1.recv() => core.handle_served(Instant::now(), served),
        };
        if let Err(e) = step {
            break Err(e);
        }
    };
    overlay.session_down(link.conn_id);
    if let Some((was, now)) = core.release_inflight() {
        overlay.add_inflight(was, now);
    }
    if link.up.is_none() && direction == Direction::Out {
        handshake("refused", &link.kex);
    }
    // What is queued (a final ERROR frame) goes out, then the stream is
    // closed; a peer that takes nothing gets `write_timeout` for both.
    if !core.write_stalled(Instant::now()) {
        let _ = tokio::time::timeout(overlay.limits.write_timeout, async {
            std::future::poll_fn(|cx| poll_transmit(&mut core, &mut stream, cx)).await?;
            stream.shutdown().await
        })
        .await;
    }
    let (peer, addr) = (&link.info.peer_id, &link.info.addr);
    match result {
        Ok(()) => tracing::info!(%peer, %addr, "overlay session closed"),
        Err(e) => tracing::info!(%peer, %addr, error = %e, "overlay session ended"),
    }
}

/// A session's ties to the node: its registration, its command channel,
/// and the channel the blocking pool answers on (one, so an idle session
/// holds one).
struct Link {
    overlay: Arc<Overlay>,
    conn_id: u64,
    info: Arc<SessionInfo>,
    kex: String,
    /// Cancelled when the peer's key stops being pinned.
    unpinned: tokio_util::sync::CancellationToken,
    commands: (mpsc::Sender<Command>, mpsc::Receiver<Command>),
    served: (mpsc::Sender<Served>, mpsc::Receiver<Served>),
    /// `overlay_sessions_active` while the session is up.
    up: Option<GaugeGuard>,
}

impl Link {
    /// Does what the session asked of the node.
    fn dispatch(&mut self, action: Action) {
        let ov = self.overlay.clone();
        let tx = self.served.0.clone();
        match action {
            Action::Up { ack_window } => {
                let info = &self.info;
                if info.direction == Direction::Out {
                    handshake("ok", &self.kex);
                }
                self.up = Some(GaugeGuard::up(names::OVERLAY_SESSIONS_ACTIVE));
                let (cmd, unpinned) = (self.commands.0.clone(), self.unpinned.clone());
                ov.session_up(self.conn_id, info.clone(), cmd, unpinned);
                // Tell the new peer our registry head: whoever is behind
                // asks for the rest.
                if let Some(payload) = crate::apps::head_announcement(&ov) {
                    let _ = self.commands.0.try_send(Command::Gossip { payload });
                }
                tracing::info!(peer = %info.peer_id, addr = %info.addr, transport = info.transport.as_str(), direction = info.direction.as_str(), kex = %self.kex, ack_window, "overlay session up");
            }
            Action::Serve {
                corr,
                proto,
                request,
            } => {
                tokio::task::spawn_blocking(move || {
                    let r = serve(&ov, proto, &request);
                    let _ = tx.blocking_send(Served::Answer(corr, proto, r));
                });
            }
            Action::ReadMore {
                corr,
                mut source,
                mut left,
            } => {
                tokio::task::spawn_blocking(move || {
                    let r = read_ahead(&mut source, &mut left).map(|p| (p, source, left));
                    // The session may have ended: the reader is dropped.
                    let _ = tx.blocking_send(Served::More(corr, r));
                });
            }
            Action::Gossip(payload) => {
                if let Some(since) = crate::apps::on_gossip(&ov, self.conn_id, &payload) {
                    let _ = self.commands.0.try_send(Command::Sync { since });
                }
            }
            Action::Synced(parts) => {
                let peer = self.info.peer_id.clone();
                tokio::task::spawn_blocking(move || match crate::apps::apply_sync(&ov, &parts) {
                    Ok(n) => tracing::info!(%peer, applied = n, "registry synced from peer"),
                    Err(e) => tracing::warn!(%peer, error = %e, "registry sync refused"),
                });
            }
        }
    }
}

/// The answer to a peer's request of `proto` (blocking: the store, the
/// registry): what to send, `None` when it is not here, or why not.
fn serve(ov: &Overlay, proto: u16, request: &[u8]) -> Result<Option<Outgoing>, Refusal> {
    match proto {
        PROTO_BLOB => match serve_blob(ov, request, ov.limits.fetch_max_bytes)? {
            Some(a) => Outgoing::blob(a.head, a.len, a.groups).map(Some),
            None => Ok(None),
        },
        PROTO_SYNC => {
            let since = serde_json::from_slice::<serde_json::Value>(request)
                .ok()
                .and_then(|v| v["since"].as_u64())
                .unwrap_or(0);
            crate::apps::sync_frames(ov, since)
                .map(|o| o.map(|frames| Outgoing::whole(PROTO_SYNC, frames)))
                .map_err(|e| Refusal::new(500, "registry", e.to_string()))
        }
        _ => Err(Refusal::new(501, "unknown_app_proto", "not served here")),
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::oap_health::OapHook;
    use ron_oap::{Encoder, Flags, FrameKind, FrameSpec};

    /// A writer that takes at most `step` bytes per call and is not ready
    /// every other call, recording what it took.
    struct Trickle {
        step: usize,
        got: Vec<u8>,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut n = 0;
            for b in bufs {
                let take = (self.step - n).min(b.len());
                self.got.extend_from_slice(&b[..take]);
                n += take;
                if n == self.step {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_driver_writes_every_queued_frame_through_partial_and_pending_writes() {
        let now = Instant::now();
        let mut enc = Encoder::default();
        for step in [1000, 7, 300_000] {
            let info = Arc::new(SessionInfo::new(
                "p".into(),
                "127.0.0.1:1".into(),
                Transport::Tcp,
                Direction::Out,
                "X25519".into(),
                "now".into(),
            ));
            let limits = crate::state::Limits::from_config(&Default::default());
            let mut core =
                SessionCore::new(now, limits, &"a".repeat(64), [0; 32], info, OapHook::new());
            // The HELLO is queued already; then frames of many sizes.
            let mut want_tail = Vec::new();
            for (i, len) in [0, 1, 65_536, 5, 70_001, 65_536, 3].into_iter().enumerate() {
                let spec =
                    FrameSpec::start(2, 2 * i as u64 + 1, Flags::RESP).with_flags(Flags::END);
                let f = enc
                    .encode(&spec, &[], bytes::Bytes::from(vec![i as u8; len]))
                    .expect("encode");
                want_tail.extend_from_slice(&f.to_vec());
                core.queue(now, f, FrameKind::Start);
            }
            let mut w = Trickle {
                step,
                got: Vec::new(),
                calls: 0,
            };
            std::future::poll_fn(|cx| poll_transmit(&mut core, &mut w, cx))
                .await
                .expect("write");
            assert!(
                !core.write_stalled(now + std::time::Duration::from_secs(3600)),
                "nothing waits"
            );
            assert!(w.got.ends_with(&want_tail), "step {step}: bytes differ");
            assert!(step > 100_000 || w.calls > 2, "partial and pending writes");
        }
    }
}
