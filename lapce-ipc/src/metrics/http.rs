//! The HTTP `/metrics` endpoint: a minimal HTTP/1.1 responder (feature `metrics-http`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{Metrics, CONTENT_TYPE};
use crate::error::{IpcError, Result};

/// A running HTTP `/metrics` endpoint (see [`IpcServer::serve_metrics`](crate::IpcServer::serve_metrics)).
/// It serves until this handle is dropped.
#[must_use = "the metrics endpoint stops when its handle is dropped"]
#[derive(Debug)]
pub struct MetricsEndpoint {
    addr: SocketAddr,
    task: tokio::task::AbortHandle,
}

impl MetricsEndpoint {
    /// The address it listens on (with the port the system chose, if it was bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/metrics`.
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Scrapes answered at once; a further connection is closed without an answer.
const MAX_SCRAPES: usize = 16;
/// A scrape must send its request and take the answer within this time.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request head read (request line and headers).
const MAX_HEAD: usize = 16 * 1024;

/// Binds `addr` and serves `metrics` on it until the returned handle is dropped.
pub(crate) async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<MetricsEndpoint> {
    let context = |e: std::io::Error| {
        IpcError::Io(std::io::Error::new(e.kind(), format!("metrics endpoint on {addr}: {e}")))
    };
    let listener = TcpListener::bind(addr).await.map_err(context)?;
    let addr = listener.local_addr().map_err(context)?;
    let task = tokio::spawn(accept_scrapes(listener, metrics));
    Ok(MetricsEndpoint { addr, task: task.abort_handle() })
}

async fn accept_scrapes(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics endpoint: too many scrapes at once; closing one");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(SCRAPE_TIMEOUT, answer(socket, &metrics)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics endpoint: scrape failed"),
                Err(_) => tracing::debug!("metrics endpoint: scrape timed out"),
            }
            drop(slot);
        });
    }
}

/// Reads one request head, writes the answer, closes.
async fn answer(mut socket: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while head_end(&head).is_none() && head.len() <= MAX_HEAD {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let response = respond(&head, || metrics.encode());
    socket.write_all(&response).await?;
    socket.shutdown().await
}

/// Where the head (request line and headers) ends: after the first empty line.
fn head_end(data: &[u8]) -> Option<usize> {
    let crlf = data.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = data.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The whole HTTP response to a request head; `body` makes the metrics text when it is asked for.
fn respond(head: &[u8], body: impl FnOnce() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).unwrap_or_default().trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let well_formed = head_end(head).is_some()
        && parts.next().is_none()
        && target.is_some_and(|t| t.starts_with('/'))
        && version.is_some_and(|v| v.starts_with("HTTP/1."));
    let (Some(method), Some(target), true) = (method, target, well_formed) else {
        return response("400 Bad Request", "text/plain; charset=utf-8", "", b"bad request\n", true);
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return response(
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "Allow: GET, HEAD\r\n",
            b"only GET and HEAD\n",
            true,
        );
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return response(
            "404 Not Found",
            "text/plain; charset=utf-8",
            "",
            b"not found: metrics are at /metrics\n",
            !head_only,
        );
    }
    // HEAD: the headers of the GET answer (its Content-Length), without the body.
    response("200 OK", CONTENT_TYPE, "", body().as_bytes(), !head_only)
}

fn response(status: &str, content_type: &str, extra: &str, body: &[u8], with_body: bool) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\
         Connection: close\r\n\r\n",
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    if with_body {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(response: &[u8]) -> &str {
        std::str::from_utf8(response).unwrap()
    }

    #[test]
    fn http_answers_metrics_404_405_and_400() {
        let ok = respond(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n", || "a 1\n# EOF\n".into());
        assert_eq!(
            text(&ok),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: 10\r\n\
                 Connection: close\r\n\r\na 1\n# EOF\n"
            )
        );
        let query = respond(b"GET /metrics?x=1 HTTP/1.1\n\n", || "b\n".into());
        assert!(text(&query).starts_with("HTTP/1.1 200 OK\r\n") && text(&query).ends_with("\r\n\r\nb\n"));
        let head = respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", || "abc\n".into());
        assert!(text(&head).contains("Content-Length: 4\r\n") && text(&head).ends_with("\r\n\r\n"));
        let never = || -> String { panic!("the metrics are only encoded for /metrics") };
        assert!(text(&respond(b"GET / HTTP/1.1\r\n\r\n", never)).starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text(&respond(b"GET /metricsx HTTP/1.1\r\n\r\n", never)).starts_with("HTTP/1.1 404 "));
        let post = respond(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", never);
        assert!(text(&post).starts_with("HTTP/1.1 405 ") && text(&post).contains("Allow: GET, HEAD\r\n"));
        assert!(text(&post).ends_with("\r\n\r\nonly GET and HEAD\n"));
        for bad in [
            &b""[..],
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/1.1",
            b"\xff\xfe\r\n\r\n",
            b"GET x HTTP/1.1\n\n",
        ] {
            assert!(text(&respond(bad, never)).starts_with("HTTP/1.1 400 "), "{bad:?}");
        }
    }
}
