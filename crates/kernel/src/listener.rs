//! Listening sockets for the HTTP planes: TCP, or a Unix socket when the
//! node runs `--uds-only` (`uds.only`). The host binds them before any role
//! starts; roles accept from them through `HttpListener`.
//!
//! Invariant: a peer on a Unix socket is a local process, so it is handed to
//! handlers as `UNIX_PEER` (127.0.0.1 port 0, which no TCP peer can have):
//! it gets the trust a loopback peer gets, and the socket's file mode and
//! directory decide who can connect.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::{Serialize, Serializer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The peer address handlers see for a connection on a Unix socket.
pub const UNIX_PEER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));

/// Where a listener is bound: `127.0.0.1:9909` or `unix:/run/ron/metrics.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for BoundAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoundAddr::Tcp(a) => write!(f, "{a}"),
            BoundAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Serialize for BoundAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl From<SocketAddr> for BoundAddr {
    fn from(a: SocketAddr) -> Self {
        BoundAddr::Tcp(a)
    }
}

/// A bound socket the host holds (blocking std type, not yet in a runtime).
#[derive(Debug)]
pub enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl StdListener {
    pub fn addr(&self) -> io::Result<BoundAddr> {
        match self {
            StdListener::Tcp(l) => l.local_addr().map(BoundAddr::Tcp),
            StdListener::Unix(l) => {
                let a = l.local_addr()?;
                let p = a.as_pathname().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "unnamed unix socket")
                })?;
                Ok(BoundAddr::Unix(p.to_path_buf()))
            }
        }
    }

    pub fn set_nonblocking(&self, v: bool) -> io::Result<()> {
        match self {
            StdListener::Tcp(l) => l.set_nonblocking(v),
            StdListener::Unix(l) => l.set_nonblocking(v),
        }
    }

    pub fn try_clone(&self) -> io::Result<StdListener> {
        Ok(match self {
            StdListener::Tcp(l) => StdListener::Tcp(l.try_clone()?),
            StdListener::Unix(l) => StdListener::Unix(l.try_clone()?),
        })
    }
}

/// Binds a Unix socket at `path` (mode 0660), creating its directory (mode
/// 0700) if needed. A socket file left by a node that is gone is replaced;
/// one a live process still accepts on is an error, as is any other file.
pub fn bind_unix(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running process", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

/// What an HTTP plane accepts connections from.
#[derive(Debug)]
pub enum HttpListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl From<tokio::net::TcpListener> for HttpListener {
    fn from(l: tokio::net::TcpListener) -> Self {
        HttpListener::Tcp(l)
    }
}

impl HttpListener {
    /// Takes a host-bound socket into the runtime (it must be nonblocking).
    pub fn from_std(l: StdListener) -> io::Result<Self> {
        Ok(match l {
            StdListener::Tcp(l) => HttpListener::Tcp(tokio::net::TcpListener::from_std(l)?),
            StdListener::Unix(l) => HttpListener::Unix(tokio::net::UnixListener::from_std(l)?),
        })
    }

    /// The next connection and its peer (`UNIX_PEER` on a Unix socket).
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            HttpListener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), peer))
            }
            HttpListener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), UNIX_PEER))
            }
        }
    }
}

/// One accepted connection.
#[derive(Debug)]
pub enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/x.sock");
        let l = bind_unix(&path).unwrap();
        // Live: refused.
        let err = bind_unix(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        drop(l);
        // Stale: replaced.
        let _l = bind_unix(&path).unwrap();
        // Not a socket: refused.
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(
            bind_unix(&file).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
    }
}
