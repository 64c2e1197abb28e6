//! `lapce-ipc serve --listen tls://...` and `lapce-ipc call tls://...`: two processes of the
//! real binary over TCP loopback, the server's certificate made by `--self-signed` and pinned by
//! the client, a token file.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_lapce-ipc");

/// The server process (killed if the test fails before it stops it) and the test's directory.
struct Server {
    child: Option<Child>,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn call(addr: &str, args: &[&str]) -> Output {
    Command::new(BIN).arg("call").arg(addr).args(args).output().unwrap()
}

#[test]
fn serve_listens_on_tls_and_call_reaches_it_with_the_pinned_certificate_and_token() {
    let tag = format!("t-cli-tls-{}", std::process::id());
    let dir = std::env::temp_dir().join(&tag);
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    std::fs::write(dir.join("token"), "cli-token\n").unwrap();
    let (cert, key, token) = (path("cert.pem"), path("key.pem"), path("token"));
    let mut child = Command::new(BIN)
        .args([
            "serve",
            &tag,
            "--listen",
            "tls://127.0.0.1:0",
            "--self-signed",
            "--cert",
            &cert,
            "--key",
            &key,
        ])
        .args(["--token-file", &token])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut server = Server { child: Some(child), dir: dir.clone() };

    // The address it prints (port 0 picked a free one).
    let mut log = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "serve ended: {log}");
        log.push_str(&line);
        if let Some(addr) = line.trim().strip_prefix("lapce-ipc serve: TLS clients at ") {
            break addr.to_owned();
        }
    };
    assert!(addr.starts_with("tls://127.0.0.1:"), "{addr}");
    let draining = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });

    let ok = call(&addr, &["--pin", &cert, "--token-file", &token, "--type", "data", "--json", "\"x\""]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "\"x\"\n");

    // The mock engine's stream, over TLS.
    let request = r#"{"model":"mock","messages":[{"role":"user","content":"remote?"}]}"#;
    let chat = call(&addr, &["--pin", &cert, "--token", "cli-token", "--type", "chat", "--json", request]);
    assert!(chat.status.success(), "{}", String::from_utf8_lossy(&chat.stderr));
    assert!(String::from_utf8_lossy(&chat.stdout).contains("You asked: \"remote?\""));

    let wrong = call(&addr, &["--pin", &cert, "--token", "nope", "--type", "data", "--text", "x"]);
    assert!(!wrong.status.success());
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(said.contains("the token is not valid"), "{said}");

    // Stopped as Ctrl-C does; the refusal was logged at warn.
    let mut child = server.child.take().unwrap();
    #[cfg(unix)]
    {
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        assert!(child.wait().unwrap().success());
        let rest = draining.join().unwrap();
        assert!(rest.contains("TLS client refused"), "{rest}");
    }
    #[cfg(not(unix))]
    {
        let _ = child.kill();
        let _ = child.wait();
        drop(draining);
    }
}
