//! The mock's WebSocket echo: a request that asks to upgrade (`Upgrade: websocket`, any path)
//! gets `101`, then every text or binary message comes back as it was sent, until either side
//! closes. hyper hands over the upgraded connection; the framing is `tungstenite`'s, driven on
//! a blocking thread through a bridge (its synchronous API is the one the tests use too).

use std::io::{self, Read, Write};

use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_util::io::SyncIoBridge;

use crate::answer::Frames;

/// Whether `request` asks for a WebSocket.
pub(crate) fn wants_upgrade(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Accepts the upgrade `request` asks for: the `101` to send, and the echo started on the
/// connection hyper hands over once it is sent.
pub(crate) fn accept(mut request: Request<Incoming>) -> io::Result<Response<Frames>> {
    let key = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .ok_or_else(|| io::Error::other("a WebSocket upgrade without Sec-WebSocket-Key"))?;
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let stream = SyncIoBridge::new(TokioIo::new(upgraded));
            tokio::task::spawn_blocking(move || echo(stream));
        }
    });
    Response::builder()
        .status(101)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "Upgrade")
        .header(SEC_WEBSOCKET_ACCEPT, accept)
        .body(Frames::new([]))
        .map_err(io::Error::other)
}

/// Echoes messages on `stream` until the connection closes.
fn echo<S: Read + Write>(stream: S) -> io::Result<()> {
    let mut socket =
        tungstenite::WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Server, None);
    loop {
        match socket.read() {
            Ok(message) if message.is_text() || message.is_binary() => {
                socket.send(message).map_err(io::Error::other)?;
            }
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(());
            }
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}
