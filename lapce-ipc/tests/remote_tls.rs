//! The server and client across processes over TCP with TLS (feature `tls`): a self-signed
//! server certificate made at test time (rcgen) and pinned by the client, a shared token or
//! client certificates; calls and streams as locally; wrong tokens and unknown certificates
//! refused with a clear error, and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use lapce_ipc::frame::MessageType;
use lapce_ipc::{BlockingIpcClient, IpcClient, IpcConfig, IpcError, IpcServer};

use crate::common::{child_role, register_count, unique_name, ChildGuard};

/// The refusals the server counted (its endpoint's accessor and its metric, as "a b").
const REFUSED: MessageType = MessageType::App(1);
/// Stops the server.
const STOP: MessageType = MessageType::App(2);
const COUNT: MessageType = MessageType::App(3);
const TOKEN: &str = "s3cret-token";

/// The certificates of one test, as PEM files in a directory of its own (removed on drop).
struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// A self-signed server certificate for 127.0.0.1, a CA for clients with one client
    /// certificate it signed, and a client certificate nobody signed.
    fn make(tag: &str) -> Certs {
        let dir = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        let server =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        write("server.pem", server.cert.pem());
        write("server.key", server.signing_key.serialize_pem());
        let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        write("other.pem", other.cert.pem());
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        write("ca.pem", ca_cert.pem());
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client = rcgen::CertificateParams::new(vec!["client".to_string()]).unwrap();
        write("client.pem", client.signed_by(&client_key, &issuer).unwrap().pem());
        write("client.key", client_key.serialize_pem());
        let rogue = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
        write("rogue.pem", rogue.cert.pem());
        write("rogue.key", rogue.signing_key.serialize_pem());
        write("token", format!("{TOKEN}\n"));
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[ignore]
fn child_main() {
    let Some((role, arg)) = child_role() else { return };
    let (name, dir) = arg.split_once(',').expect("NAME,DIR");
    match role.as_str() {
        "token-server" => child_server(name, Path::new(dir), false),
        "cert-server" => child_server(name, Path::new(dir), true),
        other => panic!("unknown role {other}"),
    }
}

/// A server requiring the token, or client certificates of the test's CA; writes the port it
/// listens on to `DIR/port`, serves until asked to stop.
fn child_server(name: &str, dir: &Path, client_certs: bool) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut config = IpcConfig::default();
        config.tls.cert = Some(dir.join("server.pem"));
        config.tls.key = Some(dir.join("server.key"));
        if client_certs {
            config.tls.client_ca = Some(dir.join("ca.pem"));
        } else {
            config.tls.token_file = Some(dir.join("token"));
            // Idle connections are closed, so that the client's reconnection is seen.
            config.ipc.idle_timeout_secs = 1;
        }
        let server = IpcServer::bind(name, config).unwrap();
        let endpoint = Arc::new(server.listen_tls("tls://127.0.0.1:0").await.unwrap());
        server.register_handler(MessageType::Data, |p: Bytes| async move {
            Ok(Bytes::from(p.to_ascii_uppercase()))
        });
        register_count(&server, COUNT);
        let (e, s) = (endpoint.clone(), server.clone());
        server.register_sync_handler(REFUSED, move |_| {
            let metric = s
                .metrics_text()
                .lines()
                .find_map(|l| l.strip_prefix("lapce_ipc_tls_refused_total ").map(str::to_owned));
            Ok(Bytes::from(format!("{} {}", e.refused(), metric.unwrap_or_default())))
        });
        let s = server.clone();
        server.register_sync_handler(STOP, move |_| {
            s.shutdown(Duration::from_secs(1));
            Ok(Bytes::new())
        });
        let port = endpoint.local_addr().port();
        std::fs::write(dir.join("port.tmp"), port.to_string()).unwrap();
        std::fs::rename(dir.join("port.tmp"), dir.join("port")).unwrap();
        server.serve().await.unwrap();
    });
}

/// Starts the server child and waits for its port.
fn start(role: &str, certs: &Certs) -> (ChildGuard, String) {
    let name = unique_name("tls");
    let child = ChildGuard::spawn(role, &format!("{name},{}", certs.dir.display())).listening_on(&name);
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        if let Ok(port) = std::fs::read_to_string(certs.path("port")) {
            break port;
        }
        assert!(Instant::now() < deadline, "the server child did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    (child, format!("tls://127.0.0.1:{port}"))
}

/// A client configuration pinning `pin` (a file of `certs`).
fn client_config(certs: &Certs, pin: &str) -> IpcConfig {
    let mut config = IpcConfig::default();
    config.tls.pin = Some(certs.path(pin));
    config
}

/// Asks the server for its refusal counts and stops it.
async fn refusals_then_stop(client: &IpcClient) -> String {
    let refused = client.request(REFUSED, "").await.unwrap();
    // The answer may be cut off by the shutdown it starts.
    match client.request(STOP, "").await {
        Ok(_) | Err(IpcError::PeerGone) => {}
        Err(e) => panic!("stop: {e}"),
    }
    String::from_utf8(refused.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_server_answers_calls_and_streams_and_refuses_the_rest() {
    let certs = Certs::make("tls-token");
    let (mut child, addr) = start("token-server", &certs);
    let mut good = client_config(&certs, "server.pem");
    good.tls.token = Some(TOKEN.into());

    let client = IpcClient::connect(&addr, good.clone()).await.unwrap();
    assert_eq!(&client.request(MessageType::Data, "hello over tls").await.unwrap()[..], b"HELLO OVER TLS");
    let chunks: Vec<Bytes> =
        client.request_stream(COUNT, "300").await.unwrap().map(|c| c.unwrap()).collect().await;
    assert_eq!(chunks.len(), 300);
    assert!(chunks.iter().enumerate().all(|(i, c)| c[..] == *i.to_string().as_bytes()));
    // A message larger than a ring record travels fragmented, as locally.
    let big = vec![b'a'; 700 * 1024];
    assert_eq!(client.request(MessageType::Data, &big).await.unwrap(), big.to_ascii_uppercase());
    // The blocking client too, from a thread without a runtime.
    let (addr2, config2) = (addr.clone(), good.clone());
    let blocking = tokio::task::spawn_blocking(move || {
        let client = BlockingIpcClient::connect(&addr2, config2).unwrap();
        client.request(MessageType::Data, "blocking").unwrap()
    });
    assert_eq!(&blocking.await.unwrap()[..], b"BLOCKING");

    let mut wrong = good.clone();
    wrong.tls.token = Some("not-the-token".into());
    match IpcClient::connect(&addr, wrong).await {
        Err(IpcError::ServerRefused(why)) => assert!(why.contains("token is not valid"), "{why}"),
        other => panic!("a wrong token was not refused: {other:?}"),
    }
    let mut none = good.clone();
    none.tls.token = None;
    match IpcClient::connect(&addr, none).await {
        Err(IpcError::ServerRefused(why)) => assert!(why.contains("token is required"), "{why}"),
        other => panic!("a missing token was not refused: {other:?}"),
    }
    // The client refuses a server whose certificate is not the pinned one.
    let mut unpinned = client_config(&certs, "other.pem");
    unpinned.tls.token = Some(TOKEN.into());
    match IpcClient::connect(&addr, unpinned).await {
        Err(IpcError::Handshake(why)) => assert!(why.contains("not trusted"), "{why}"),
        other => panic!("an unknown server certificate was accepted: {other:?}"),
    }
    // The server closes the idle connection; the client reconnects by itself, as locally.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.reconnects() == 0 {
        assert!(Instant::now() < deadline, "the client did not reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(&client.request(MessageType::Data, "again").await.unwrap()[..], b"AGAIN");
    // The server counted all three: the endpoint and the metric agree.
    assert_eq!(refusals_then_stop(&client).await, "3 3");
    tokio::task::spawn_blocking(move || child.wait_success(Duration::from_secs(20))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_server_admits_its_clients_only() {
    let certs = Certs::make("tls-cert");
    let (mut child, addr) = start("cert-server", &certs);
    let mut good = client_config(&certs, "server.pem");
    good.tls.client_cert = Some(certs.path("client.pem"));
    good.tls.client_key = Some(certs.path("client.key"));
    let client = IpcClient::connect(&addr, good.clone()).await.unwrap();
    assert_eq!(&client.request(MessageType::Data, "x").await.unwrap()[..], b"X");

    let mut rogue = good.clone();
    rogue.tls.client_cert = Some(certs.path("rogue.pem"));
    rogue.tls.client_key = Some(certs.path("rogue.key"));
    match IpcClient::connect(&addr, rogue).await {
        Err(IpcError::ServerRefused(why)) => assert!(why.contains("client certificate"), "{why}"),
        other => panic!("an unknown client certificate was accepted: {other:?}"),
    }
    let mut anonymous = good.clone();
    anonymous.tls.client_cert = None;
    anonymous.tls.client_key = None;
    assert!(matches!(IpcClient::connect(&addr, anonymous).await, Err(IpcError::ServerRefused(_))));
    assert_eq!(refusals_then_stop(&client).await, "2 2");
    tokio::task::spawn_blocking(move || child.wait_success(Duration::from_secs(20))).await.unwrap();
}

/// A listener that would admit anyone is refused before it binds.
#[tokio::test]
async fn listener_without_token_or_client_ca_is_refused() {
    let certs = Certs::make("tls-open");
    let mut config = IpcConfig::default();
    config.tls.cert = Some(certs.path("server.pem"));
    config.tls.key = Some(certs.path("server.key"));
    let server = IpcServer::bind(&unique_name("tls-open"), config).unwrap();
    match server.listen_tls("tls://127.0.0.1:0").await {
        Err(IpcError::InvalidArgument(why)) => assert!(why.contains("admit anyone"), "{why}"),
        other => panic!("an open TLS listener was allowed: {other:?}"),
    }
}
