//! HTTP/1.1 and HTTP/2 over shared memory with hyper: `cargo run -p lapce-ipc --example
//! http_over_shm`.
//!
//! hyper needs nothing from lapce-ipc but a byte stream: a [`ByteStream`] wrapped in
//! hyper-util's `TokioIo` goes to `hyper::client::conn` on one side and `hyper::server::conn`
//! (here hyper-util's `auto` builder, which serves both versions) on the other. The process
//! starts itself again as the server (`http_over_shm serve NAME`), then makes one HTTP/1.1 and
//! one HTTP/2 connection, on each a `GET /hello` and a `POST /echo` of 1 MiB (four times the
//! ring), and closes them; the server exits after its two connections and is reaped.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lapce_ipc::{ByteStream, IpcError, SharedMemoryListener, SharedMemoryStream};

/// Connections the server serves before it exits: one per HTTP version.
const CONNECTIONS: usize = 2;

/// Size of the body `POST /echo` sends.
pub const ECHO_BODY: usize = 1 << 20;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The server's routes: `GET /hello` names the version spoken, `POST /echo` answers with the
/// request's body; anything else is a 404.
async fn route(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Error> {
    let version = request.version();
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/hello") => Response::new(Full::new(Bytes::from(format!("hello over {version:?}")))),
        (&Method::POST, "/echo") => Response::new(Full::new(request.into_body().collect().await?.to_bytes())),
        _ => Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::new()))?,
    };
    Ok(response)
}

/// Serves [`CONNECTIONS`] connections on the listener `name`, each HTTP/1.1 or HTTP/2 as the
/// client starts it, and returns once they have all closed.
pub fn serve(name: &str) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = SharedMemoryListener::bind(name)?;
        let mut connections = tokio::task::JoinSet::new();
        for _ in 0..CONNECTIONS {
            let io = TokioIo::new(ByteStream::new(listener.accept().await?));
            connections.spawn(async move {
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(io, hyper::service::service_fn(route))
                    .await
            });
        }
        while let Some(served) = connections.join_next().await {
            served??;
        }
        Ok(())
    })
}

/// A byte stream to the server at `name`, waiting up to a minute for it to bind.
async fn connect(name: &str) -> Result<TokioIo<ByteStream>, Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match SharedMemoryStream::connect(name).await {
            Ok(stream) => return Ok(TokioIo::new(ByteStream::new(stream))),
            Err(IpcError::Connect { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What one connection saw.
#[derive(Debug, PartialEq, Eq)]
pub struct Exchange {
    /// The version the responses came in.
    pub version: Version,
    /// The body of `GET /hello`.
    pub hello: String,
    /// `POST /echo` came back whole.
    pub echoed: bool,
}

/// A connection's request sender, either version.
trait Sender {
    /// Sends `request` once the connection can take it (hyper refuses a request sent before:
    /// "connection was not ready").
    async fn send(&mut self, request: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>>;
}

impl Sender for hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    async fn send(&mut self, request: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
        self.ready().await?;
        self.send_request(request).await
    }
}

impl Sender for hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    async fn send(&mut self, request: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
        self.ready().await?;
        self.send_request(request).await
    }
}

/// `GET /hello` and `POST /echo` through `sender`.
async fn exchange(sender: &mut impl Sender) -> Result<Exchange, Error> {
    let hello = sender.send(Request::get("http://lapce-ipc/hello").body(Full::new(Bytes::new()))?).await?;
    let version = hello.version();
    let hello = String::from_utf8(hello.into_body().collect().await?.to_bytes().to_vec())?;
    let body: Bytes = (0..ECHO_BODY).map(|i| (i % 253) as u8).collect();
    let echo = sender.send(Request::post("http://lapce-ipc/echo").body(Full::new(body.clone()))?).await?;
    let echoed = echo.status() == StatusCode::OK && echo.into_body().collect().await?.to_bytes() == body;
    Ok(Exchange { version, hello, echoed })
}

/// One HTTP/1.1 connection and one HTTP/2 connection to the server at `name`, closed after
/// their exchange.
pub async fn run_client(name: &str) -> Result<[Exchange; 2], Error> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(connect(name).await?).await?;
    let driver = tokio::spawn(connection);
    let http1 = exchange(&mut sender).await?;
    // Dropping the sender closes the connection: its driver ends.
    drop(sender);
    driver.await??;

    let io = connect(name).await?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
    let driver = tokio::spawn(connection);
    let http2 = exchange(&mut sender).await?;
    drop(sender);
    driver.await??;
    Ok([http1, http2])
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, name] = &args[..] {
        if role == "serve" {
            return serve(name);
        }
    }
    let name = format!("http-over-shm-{}", std::process::id());
    let mut server = std::process::Command::new(std::env::current_exe()?).args(["serve", &name]).spawn()?;
    let exchanges = tokio::runtime::Runtime::new()?.block_on(run_client(&name));
    if exchanges.is_err() {
        // The server would wait for its connections forever.
        let _ = server.kill();
    }
    let status = server.wait()?;
    let exchanges = exchanges?;
    println!("{exchanges:?}; server {status}");
    let expected = [Version::HTTP_11, Version::HTTP_2];
    for (exchange, version) in exchanges.iter().zip(expected) {
        if exchange.version != version
            || exchange.hello != format!("hello over {version:?}")
            || !exchange.echoed
        {
            return Err(format!("unexpected exchange: {exchange:?}").into());
        }
    }
    if !status.success() {
        return Err(format!("the server failed: {status}").into());
    }
    Ok(())
}
