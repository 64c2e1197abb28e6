//! `lapce-ipc serve` and `lapce-ipc call` as a user runs them: two processes of the real binary.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lapce-ipc");

/// The server process, killed if the test fails before it stops it.
struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn call(name: &str, args: &[&str]) -> Output {
    Command::new(BIN).arg("call").arg(name).args(args).output().unwrap()
}

/// `call` until the server answers (it needs a moment to bind).
fn call_when_up(name: &str, args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = call(name, args);
        if out.status.success() || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops `serve` as Ctrl-C does (SIGINT) and returns what it wrote on stderr, once it exited
/// successfully.
#[cfg(unix)]
fn interrupt(server: &mut Server) -> String {
    let child = server.0.take().unwrap();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "serve exited with {}: {log}", out.status);
    log
}

#[test]
fn serve_answers_call_then_stops_gracefully_on_ctrl_c() {
    let name = format!("t-cli-{}", std::process::id());
    let child = Command::new(BIN)
        .args(["serve", &name, "--token-delay-ms", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut server = Server(Some(child));

    let echo = call_when_up(&name, &["--type", "data", "--text", "hello there"]);
    assert!(echo.status.success(), "{}", String::from_utf8_lossy(&echo.stderr));
    assert_eq!(String::from_utf8_lossy(&echo.stdout), "hello there\n");

    let request = r#"{"model":"mock","messages":[{"role":"user","content":"what is a ring?"}],"maxTokens":64,"newField":true}"#;
    let chat = call(&name, &["--type", "chat", "--json", request]);
    assert!(chat.status.success(), "{}", String::from_utf8_lossy(&chat.stderr));
    let text = String::from_utf8_lossy(&chat.stdout);
    assert!(text.contains("You asked: \"what is a ring?\""), "{text}");
    assert!(String::from_utf8_lossy(&chat.stderr).contains("finish reason: stop"));

    let complete = call(&name, &["--type", "complete", "--json", request]);
    let json: serde_json::Value = serde_json::from_slice(&complete.stdout).unwrap();
    assert_eq!(json["finishReason"], "stop");
    assert_eq!(json["model"], "mock");

    // A malformed request is refused before it is sent, with the decoder's reason.
    let bad = call(
        &name,
        &["--type", "chat", "--json", r#"{"model":"m","messages":[{"role":"robot","content":""}]}"#],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown variant `robot`"));

    #[cfg(unix)]
    {
        let log = interrupt(&mut server);
        assert!(log.contains("stopped after"), "{log}");
        let gone = call(&name, &["--type", "data", "--text", "late"]);
        assert!(!gone.status.success(), "the server still answers after Ctrl-C");
    }
    // No SIGINT on Windows: the guard kills the server.
    #[cfg(not(unix))]
    drop(server);
}

/// A peer refused at the connection limit (`max_connections = 1` while a chat streams) is warned
/// of on stderr as it happens and counted in the summary when the server stops.
#[cfg(unix)]
#[test]
fn serve_warns_of_refused_peers_and_counts_them_in_its_summary() {
    use std::io::Read;

    let name = format!("t-cli-refuse-{}", std::process::id());
    let config = std::env::temp_dir().join(format!("{name}.toml"));
    std::fs::write(&config, "[ipc]\nmax_connections = 1\n").unwrap();
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _config_file = RemoveOnDrop(config.clone());
    let child = Command::new(BIN)
        .args(["serve", &name, "--token-delay-ms", "100", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server(Some(child));
    let up = call_when_up(&name, &["--type", "data", "--text", "up"]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));

    // A chat holds the only connection while its answer streams (~15 tokens, 100 ms apart).
    let request = r#"{"model":"mock","messages":[{"role":"user","content":"hold the line"}]}"#;
    let refused = loop {
        let mut chat = Command::new(BIN)
            .args(["call", &name, "--type", "chat", "--json", request])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = [0u8; 1];
        let streaming = chat.stdout.as_mut().unwrap().read(&mut first).unwrap() == 1;
        if !streaming {
            // The previous call's connection was still counted: refused too; try again.
            let _ = chat.wait();
            continue;
        }
        let refused = call(&name, &["--type", "data", "--text", "one too many"]);
        let status = chat.wait().unwrap();
        assert!(status.success(), "the chat failed: {status}");
        break refused;
    };
    assert!(!refused.status.success(), "a second connection was let in at max_connections = 1");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("limit of 1 connections"), "{why}");

    let log = interrupt(&mut server);
    let warnings =
        log.matches("lapce-ipc serve: warning: refused a connection (at the limit of 1 connections").count();
    assert!(warnings >= 1, "no warning of the refusal:\n{log}");
    assert!(
        log.contains(&format!(
            "refused {warnings} connections at the limit or during shutdown, 0 clients in the handshake"
        )),
        "the summary does not count the {warnings} refusal(s) warned of:\n{log}"
    );
    // The library's own warning, shown by the default log level.
    assert!(log.contains("WARN") && log.contains("connection refused: at the connection limit"), "{log}");
}

/// A file or directory in the temp directory, removed when the test ends.
#[cfg(unix)]
struct TempPath(std::path::PathBuf);

#[cfg(unix)]
impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `serve NAME` with `args` and `env`, its stderr piped, its stdout dropped.
#[cfg(unix)]
fn spawn_serve(name: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut command = Command::new(BIN);
    command.args(["serve", name, "--token-delay-ms", "1"]).args(args).env_remove("RUST_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    Server(Some(command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()))
}

/// `call --config` reaches a server whose socket lives in a `socket_dir` of the configuration
/// (where a call without it does not look), and `--type` takes wire values in decimal and hex,
/// refusing out-of-range ones before connecting.
#[cfg(unix)]
#[test]
fn call_reads_the_servers_config_and_takes_numeric_types() {
    use std::os::unix::fs::PermissionsExt;

    let name = format!("t-cli-config-{}", std::process::id());
    let dir = TempPath(std::env::temp_dir().join(format!("{name}-dir")));
    std::fs::create_dir(&dir.0).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = TempPath(std::env::temp_dir().join(format!("{name}.toml")));
    std::fs::write(&config.0, format!("[ipc]\nsocket_dir = {:?}\n", dir.0.display().to_string())).unwrap();
    let config_arg = config.0.to_str().unwrap();
    let mut server = spawn_serve(&name, &["--config", config_arg], &[]);

    let echo = call_when_up(&name, &["--config", config_arg, "--type", "2", "--text", "by number"]);
    assert!(echo.status.success(), "{}", String::from_utf8_lossy(&echo.stderr));
    assert_eq!(String::from_utf8_lossy(&echo.stdout), "by number\n");
    assert!(dir.0.join(format!("{name}.sock")).exists(), "the socket is not in socket_dir");

    // Without the configuration the client looks in the default runtime directory.
    let lost = call(&name, &["--type", "data", "--text", "where?"]);
    assert!(!lost.status.success(), "a call without --config found the server in socket_dir");

    let request = r#"{"model":"mock","messages":[{"role":"user","content":"hex"}]}"#;
    let complete = call(&name, &["--config", config_arg, "--type", "0x100", "--json", request]);
    assert!(complete.status.success(), "{}", String::from_utf8_lossy(&complete.stderr));
    let json: serde_json::Value = serde_json::from_slice(&complete.stdout).unwrap();
    assert_eq!(json["finishReason"], "stop");

    // A type no handler serves is sent and answered with the server's error.
    let unknown = call(&name, &["--config", config_arg, "--type", "0xBEEF", "--text", "x"]);
    assert!(!unknown.status.success());
    assert!(!unknown.stderr.is_empty());

    for (bad, why) in
        [("65536", "out of range"), ("0x10000", "out of range"), ("0", "reserved"), ("nope", "unknown")]
    {
        let out = call(&name, &["--config", config_arg, "--type", bad]);
        assert_eq!(out.status.code(), Some(2), "--type {bad} was not refused as a usage error");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "--type {bad}: {stderr}");
    }
    let log = interrupt(&mut server);
    assert!(log.contains("stopped after"), "{log}");
    assert!(!dir.0.join(format!("{name}.sock")).exists(), "the socket file was left behind");
}

/// The library's debug events reach `serve`'s stderr with `-vv` or with `RUST_LOG`, and not by
/// default: the heap trim a server logs once its last connection has been gone a while
/// (`idle_trim_ms`).
#[cfg(unix)]
#[test]
fn verbose_flag_and_rust_log_show_the_librarys_debug_events() {
    let config = TempPath(std::env::temp_dir().join(format!("t-cli-log-{}.toml", std::process::id())));
    std::fs::write(&config.0, "[ipc]\nidle_trim_ms = 50\n").unwrap();
    let config_arg = config.0.to_str().unwrap();
    let debug_lines = |tag: &str, args: &[&str], env: &[(&str, &str)]| {
        let name = format!("t-cli-log-{tag}-{}", std::process::id());
        let mut server = spawn_serve(&name, &[&["--config", config_arg][..], args].concat(), env);
        let up = call_when_up(&name, &["--text", "hi"]);
        assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
        // The trim comes idle_trim_ms after the last connection ended.
        std::thread::sleep(Duration::from_millis(1000));
        let log = interrupt(&mut server);
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("DEBUG") && l.contains("lapce_ipc"))
            .map(str::to_owned)
            .collect();
        (lines, log)
    };
    let (lines, log) = debug_lines("vv", &["-vv"], &[]);
    assert!(!lines.is_empty(), "no debug event of the library with -vv:\n{log}");
    let (lines, log) = debug_lines("env", &[], &[("RUST_LOG", "lapce_ipc=debug")]);
    assert!(!lines.is_empty(), "no debug event of the library with RUST_LOG=lapce_ipc=debug:\n{log}");
    let (lines, _) = debug_lines("default", &[], &[]);
    assert!(lines.is_empty(), "debug events without -v or RUST_LOG: {lines:?}");
}
