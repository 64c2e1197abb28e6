//! The listener: reads a connection while nobody else does, so that notifications arrive while
//! no request waits (see [`super::notify`]). Started only once the client registers for
//! notifications; one per connection.
//!
//! Rules:
//! - It takes the reader role only when it is free and no owner wants it, and gives it back as
//!   soon as one does (see [`Calls::poll_wanted`]): requests read their own answers as before.
//! - It holds its connection weakly: a dropped client's connection closes, and the listener
//!   ends (the connection's calls wake it as they go).
//! - The blocking client's notification callback runs here, with the role given back, so the
//!   callback may make requests.

use std::future::poll_fn;
use std::sync::{Arc, Weak};
use std::task::Poll;

use super::calls::Calls;
use super::inbound::Inbound;
use super::notify::Hub;

/// What the listener does next.
enum Next {
    /// Read: it holds the role.
    Read(Box<Inbound>),
    /// Run the notification callback.
    Callback,
    /// The connection is over.
    End,
}

/// Listens on the connection `conn` (whose calls `calls` finds) until it is gone or ends.
pub(super) async fn listen<T>(conn: Weak<T>, calls: fn(&T) -> &Calls, hub: Arc<Hub>) {
    loop {
        let next = poll_fn(|cx| {
            let Some(c) = conn.upgrade() else { return Poll::Ready(Next::End) };
            if hub.callback_due(cx.waker()) {
                return Poll::Ready(Next::Callback);
            }
            calls(&c).poll_listen(cx.waker()).map(|role| role.map_or(Next::End, Next::Read))
        })
        .await;
        match next {
            Next::End => return,
            Next::Callback => hub.run_callback(),
            Next::Read(mut inbound) => {
                let open = read(&conn, calls, &mut inbound, &hub).await;
                // Given back even after an error: every reader meets it (the calls failed).
                let Some(c) = conn.upgrade() else { return };
                calls(&c).give_back(inbound);
                if !open {
                    return;
                }
            }
        }
    }
}

/// As the reader: hands out what the ring holds and waits for more, until an owner wants the
/// role or the callback has notifications to take (`true`), or the connection ends (`false`).
async fn read<T>(conn: &Weak<T>, calls: fn(&T) -> &Calls, inbound: &mut Inbound, hub: &Hub) -> bool {
    loop {
        {
            let Some(c) = conn.upgrade() else { return false };
            let calls = calls(&c);
            loop {
                match inbound.try_next(|msg, block| calls.deliver(msg, block)) {
                    Ok(Some(())) => {}
                    Ok(None) => break,
                    Err(e) => {
                        calls.fail_all(&e);
                        return false;
                    }
                }
            }
        }
        let waited = inbound
            .rx()
            .readable_or(|cx| match conn.upgrade() {
                None => Poll::Ready(()),
                Some(c) if hub.callback_due(cx.waker()) => {
                    drop(c);
                    Poll::Ready(())
                }
                Some(c) => calls(&c).poll_wanted(cx.waker()),
            })
            .await;
        match waited {
            Ok(false) => {}
            Ok(true) => return conn.strong_count() > 0,
            Err(e) => {
                if let Some(c) = conn.upgrade() {
                    calls(&c).fail_all(&e);
                }
                return false;
            }
        }
    }
}
