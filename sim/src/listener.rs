//! The TCP listener behind the HTTP server, with connections that can be cut all at once.
//!
//! `Sim::go_down` must look like a dead server: new connections refused (the listener is
//! dropped) and open ones, kept-alive HTTP and upgraded websockets alike, failing at once. axum
//! spawns each connection on its own task, so every accepted stream is wrapped to fail its next
//! read or write, and wake, as soon as its generation is marked down.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// Binds 127.0.0.1:`port`, reusing the address so a restart can take the same port at once.
pub(crate) fn bind(port: u16) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(1024)
}

pub(crate) struct Tracked {
    listener: TcpListener,
    down: watch::Receiver<bool>,
}

impl Tracked {
    /// Connections accepted here fail once `true` is sent on the paired sender.
    pub(crate) fn new(listener: TcpListener) -> (Tracked, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        (Tracked { listener, down: rx }, tx)
    }
}

impl axum::serve::Listener for Tracked {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let mut down = self.down.clone();
                    let signal = Box::pin(async move {
                        let _ = down.wait_for(|d| *d).await;
                    });
                    return (
                        Conn {
                            stream,
                            signal,
                            cut: false,
                        },
                        addr,
                    );
                }
                // Out of file descriptors and the like: back off rather than spin.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted connection that dies with its generation.
pub(crate) struct Conn {
    stream: TcpStream,
    signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    cut: bool,
}

impl Conn {
    fn is_cut(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.cut && self.signal.as_mut().poll(cx).is_ready() {
            self.cut = true;
        }
        self.cut
    }
}

fn reset() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "the simulated server went down",
    )
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_cut(cx) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_cut(cx) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_cut(cx) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
