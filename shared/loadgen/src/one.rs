//! One request, the way a browser or an API client sends it: on a new
//! connection, from a chosen source address, with headers (a cookie, an
//! API key), keeping every response header for the caller to read.
//!
//! The load generator proper ([`crate::run`]) counts thousands of identical
//! GETs; the lessons' demos need fewer, different ones: a login that sets a
//! cookie, a client that must be told `Retry-After`. The source address
//! matters for sticky routing, which keys on it: any address in
//! 127.0.0.0/8 is this machine, so `127.0.1.7` and `127.0.1.8` look like two
//! clients, and `127.0.0.1` for everyone looks like one NAT.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::HeaderMap;
use hyper::header::{CONNECTION, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

/// What came back.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The worker that answered (`x-worker-id`).
    pub fn worker(&self) -> Option<&str> {
        self.header(crate::WORKER_HEADER)
    }
}

/// Why there was no answer.
#[derive(Debug, thiserror::Error)]
pub enum OneError {
    #[error("refusing to send to {0}: only 127.0.0.1 or ::1")]
    NotLoopback(SocketAddr),
    #[error("cannot connect from {from} to {to}: {cause}")]
    Connect {
        from: IpAddr,
        to: SocketAddr,
        cause: std::io::Error,
    },
    #[error("the request failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the request could not be built: {0}")]
    Build(#[from] hyper::http::Error),
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
}

/// `method path` from `from` to `to`, with `headers`, on a new connection
/// that is closed afterwards; at most `timeout`.
pub async fn request(
    from: IpAddr,
    to: SocketAddr,
    method: hyper::Method,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Answer, OneError> {
    if !to.ip().is_loopback() {
        return Err(OneError::NotLoopback(to));
    }
    let attempt = async {
        let connect = |cause| OneError::Connect { from, to, cause };
        let socket = match from {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(connect)?;
        socket.bind(SocketAddr::new(from, 0)).map_err(connect)?;
        let stream = socket.connect(to).await.map_err(connect)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "127.0.0.1")
            .header(CONNECTION, "close");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = sender
            .send_request(builder.body(Empty::<Bytes>::new())?)
            .await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| OneError::Timeout(timeout))?
}
