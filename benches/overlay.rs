//! Overlay transport costs in-process on loopback, each next to its peer
//! from the same run:
//! - handshake latency (TCP connect + pinned TLS 1.3 with client
//!   certificates) p50/p99 over 300 handshakes: hybrid X25519MLKEM768 next
//!   to classical X25519;
//! - bulk transfer of 256 MiB over one TLS stream: OAP/1 DATA frames of
//!   64 KiB (encoded with the pooled encoder, decoded zero-copy on the
//!   receiver) next to the same bytes written raw.
//!
//! Not yet measured here (see the overlay issue): QUIC next to raw quinn,
//! credit/ACK round trips, and memory per idle session.
//!
//! Run: `cargo bench --bench overlay`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ron_oap::{Decoded, Decoder, Encoder, Flags, FrameSpec};
use ron_overlay::identity::Identity;
use ron_overlay::tls::{client_config, peer_name, server_config, Pins};
use ron_overlay::PqMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pair {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

fn pair(mode: PqMode) -> Pair {
    let a = Identity::from_seed([1; 32]).expect("id");
    let b = Identity::from_seed([2; 32]).expect("id");
    Pair {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(
            server_config(&a, Arc::new(Pins::new([b.public_key()])), mode).expect("server"),
        )),
        connector: tokio_rustls::TlsConnector::from(Arc::new(
            client_config(&b, Arc::new(Pins::new([a.public_key()])), mode).expect("client"),
        )),
    }
}

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort_unstable();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

async fn handshakes(mode: PqMode, n: usize) -> Vec<Duration> {
    let p = pair(mode);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let acceptor = p.acceptor.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acc = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acc.accept(s).await {
                    let _ = tls.write_all(b"k").await;
                    let _ = tls.flush().await;
                }
            });
        }
    });
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut tls = p.connector.connect(peer_name(), s).await.expect("tls");
        // The server's byte arrives only after it accepted our certificate.
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.expect("read");
        out.push(t.elapsed());
    }
    out
}

const BULK: usize = 256 << 20;
const FRAME: usize = 64 * 1024;

async fn bulk(oap: bool) -> Duration {
    let p = pair(PqMode::Classical);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let acceptor = p.acceptor.clone();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.expect("accept");
        let mut tls = acceptor.accept(s).await.expect("tls");
        let mut buf = BytesMut::with_capacity(4 * FRAME);
        let dec = Decoder::default();
        let mut got = 0usize;
        while got < BULK {
            if tls.read_buf(&mut buf).await.expect("read") == 0 {
                break;
            }
            if oap {
                while let Ok(Decoded::Frame(f)) = dec.decode(&mut buf) {
                    got += f.payload.len();
                }
            } else {
                got += buf.len();
                buf.clear();
            }
        }
        got
    });
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut tls = p.connector.connect(peer_name(), s).await.expect("tls");
    let data = Bytes::from(vec![7u8; FRAME]);
    let mut enc = Encoder::default();
    let t = Instant::now();
    for i in 0..BULK / FRAME {
        if oap {
            let spec = FrameSpec::data(2, 1, Flags::RESP);
            let spec = if i == 0 {
                FrameSpec::start(2, 1, Flags::RESP)
            } else {
                spec
            };
            let f = enc.encode(&spec, &[], data.clone()).expect("encode");
            tls.write_all(f.header_bytes()).await.expect("write");
            tls.write_all(f.payload()).await.expect("write");
        } else {
            tls.write_all(&data).await.expect("write");
        }
    }
    tls.flush().await.expect("flush");
    let got = server.await.expect("server");
    assert_eq!(got, BULK);
    t.elapsed()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut classical = handshakes(PqMode::Classical, 300).await;
        let mut hybrid = handshakes(PqMode::Hybrid, 300).await;
        let (c50, c99) = (pct(&mut classical, 50), pct(&mut classical, 99));
        let (h50, h99) = (pct(&mut hybrid, 50), pct(&mut hybrid, 99));
        println!(
            "overlay/handshake (TCP + pinned TLS 1.3, mutual): hybrid p50 {h50:?} p99 {h99:?} | classical p50 {c50:?} p99 {c99:?} | ratio p50 {:.2}x p99 {:.2}x",
            h50.as_secs_f64() / c50.as_secs_f64(),
            h99.as_secs_f64() / c99.as_secs_f64()
        );
        let raw = bulk(false).await;
        let oap = bulk(true).await;
        let mbs = |d: Duration| (BULK as f64 / (1 << 20) as f64) / d.as_secs_f64();
        println!(
            "overlay/bulk 256 MiB over TLS: OAP/1 frames {:.0} MiB/s | raw rustls {:.0} MiB/s | ratio {:.2}x",
            mbs(oap),
            mbs(raw),
            mbs(oap) / mbs(raw)
        );
    });
}
