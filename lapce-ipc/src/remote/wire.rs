//! The exchange that follows the TLS handshake (docs/PROTOCOL.md, "TCP transport"):
//!
//! - client hello: `LAPCTLSC`, the protocol version (u32 LE), the token's length (u32 LE, at
//!   most [`MAX_TOKEN`]; 0 for none) and the token;
//! - server verdict: `LAPCTLSS`, a status (u32 LE: 0 accepted, 1 refused), the reason's length
//!   (u32 LE, at most [`MAX_REASON`]) and the reason in UTF-8. A refusing server closes next.
//!
//! Lengths are checked before anything is allocated for what they announce.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::connection::PROTOCOL_VERSION;
use crate::error::{IpcError, Result};

const CLIENT_MAGIC: &[u8; 8] = b"LAPCTLSC";
const SERVER_MAGIC: &[u8; 8] = b"LAPCTLSS";
/// Longest token a client may send.
pub(crate) const MAX_TOKEN: usize = 1024;
/// Longest refusal reason a server sends.
const MAX_REASON: usize = 1024;
const ACCEPTED: u32 = 0;
const REFUSED: u32 = 1;

/// Sends the client hello with `token` (empty for none).
pub(crate) async fn send_hello<W: AsyncWrite + Unpin>(io: &mut W, token: &[u8]) -> Result<()> {
    if token.len() > MAX_TOKEN {
        return Err(IpcError::InvalidArgument(format!("the TLS token is over {MAX_TOKEN} bytes")));
    }
    let mut hello = Vec::with_capacity(16 + token.len());
    hello.extend_from_slice(CLIENT_MAGIC);
    hello.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    hello.extend_from_slice(&(token.len() as u32).to_le_bytes());
    hello.extend_from_slice(token);
    io.write_all(&hello).await?;
    io.flush().await?;
    Ok(())
}

/// Reads a client hello; returns its token, or why the hello is refused.
pub(crate) async fn read_hello<R: AsyncRead + Unpin>(io: &mut R) -> std::io::Result<Result<Vec<u8>, String>> {
    let mut head = [0u8; 16];
    io.read_exact(&mut head).await?;
    if &head[..8] != CLIENT_MAGIC {
        return Ok(Err("not a lapce-ipc client hello".into()));
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if version != PROTOCOL_VERSION {
        return Ok(Err(format!("protocol version {version}; this server speaks {PROTOCOL_VERSION}")));
    }
    let len = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as usize;
    if len > MAX_TOKEN {
        return Ok(Err(format!("a token of {len} bytes (at most {MAX_TOKEN})")));
    }
    let mut token = vec![0u8; len];
    io.read_exact(&mut token).await?;
    Ok(Ok(token))
}

/// Sends the server's verdict: accepted (`Ok`), or refused with a reason.
pub(crate) async fn send_verdict<W: AsyncWrite + Unpin>(
    io: &mut W,
    verdict: Result<(), &str>,
) -> std::io::Result<()> {
    let (status, reason) = match verdict {
        Ok(()) => (ACCEPTED, ""),
        Err(reason) => (REFUSED, reason),
    };
    let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON)];
    let mut out = Vec::with_capacity(16 + reason.len());
    out.extend_from_slice(SERVER_MAGIC);
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&(reason.len() as u32).to_le_bytes());
    out.extend_from_slice(reason);
    io.write_all(&out).await?;
    io.flush().await
}

/// Reads the server's verdict: `Ok(Ok(()))` accepted, `Ok(Err(reason))` refused.
pub(crate) async fn read_verdict<R: AsyncRead + Unpin>(io: &mut R) -> std::io::Result<Result<(), String>> {
    let mut head = [0u8; 16];
    io.read_exact(&mut head).await?;
    if &head[..8] != SERVER_MAGIC {
        return Ok(Err("the server's answer is not a lapce-ipc verdict".into()));
    }
    let status = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    let len = (u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as usize).min(MAX_REASON);
    let mut reason = vec![0u8; len];
    io.read_exact(&mut reason).await?;
    match status {
        ACCEPTED => Ok(Ok(())),
        _ => Ok(Err(String::from_utf8_lossy(&reason).into_owned())),
    }
}

/// Compares two tokens in time independent of where they differ.
pub(crate) fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hello_and_verdict_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        send_hello(&mut a, b"secret").await.unwrap();
        assert_eq!(read_hello(&mut b).await.unwrap().unwrap(), b"secret");
        send_verdict(&mut b, Err("the token is not valid")).await.unwrap();
        assert_eq!(read_verdict(&mut a).await.unwrap(), Err("the token is not valid".to_owned()));
        send_verdict(&mut b, Ok(())).await.unwrap();
        assert_eq!(read_verdict(&mut a).await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn oversized_token_is_refused_before_reading_it() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let mut head = CLIENT_MAGIC.to_vec();
        head.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        head.extend_from_slice(&u32::MAX.to_le_bytes());
        a.write_all(&head).await.unwrap();
        let refused = read_hello(&mut b).await.unwrap().unwrap_err();
        assert!(refused.contains("at most"), "{refused}");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abc", b"abd"));
        assert!(!same_token(b"abc", b"abcd"));
    }
}
