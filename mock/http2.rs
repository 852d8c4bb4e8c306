//! The mock's HTTP/2 mode (`--h2`): the same answers over h2c with prior knowledge, or over
//! TLS by ALPN `h2` with `--tls-cert`/`--tls-key`; and a small gRPC service, with gRPC's
//! framing written out (a flag byte and a 4-byte length before each message), so that demos
//! and tests need nothing generated:
//!
//! - `/mock.Echo/Unary`: answers the request message as it came;
//! - `/mock.Echo/Stream`: answers it three times (server streaming);
//! - `/mock.Echo/Unavailable`: fails with `grpc-status: 14` (trailers only);
//! - any other method: `grpc-status: 12` (UNIMPLEMENTED).
//!
//! Every answer carries `x-mock-port` (gRPC ones in their trailers too).

use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Request, Response};
use openssl::ssl::{Ssl, SslAcceptor};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// Serves HTTP/2 on `listener` until the process ends.
pub fn serve(listener: StdListener, port: u16, acceptor: Option<Arc<SslAcceptor>>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async move {
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let listener = TcpListener::from_std(listener).expect("a Tokio listener");
        let connections = Arc::new(AtomicU64::new(0));
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let connection = connections.fetch_add(1, Ordering::Relaxed) + 1;
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                match acceptor {
                    None => connection_loop(tcp, port, connection).await,
                    Some(acceptor) => {
                        let Ok(ssl) = Ssl::new(acceptor.context()) else {
                            return;
                        };
                        let Ok(mut tls) = tokio_openssl::SslStream::new(ssl, tcp) else {
                            return;
                        };
                        if std::pin::Pin::new(&mut tls).accept().await.is_ok() {
                            connection_loop(tls, port, connection).await;
                        }
                    }
                }
            });
        }
    });
}

async fn connection_loop<T: AsyncRead + AsyncWrite + Unpin>(io: T, port: u16, connection: u64) {
    let Ok(mut h2) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((request, respond))) = h2.accept().await {
        tokio::spawn(async move {
            let _ = answer(request, respond, port, connection).await;
        });
    }
}

async fn answer(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    port: u16,
    connection: u64,
) -> Result<(), h2::Error> {
    let (parts, mut body) = request.into_parts();
    let mut received = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    let grpc = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let port_value = HeaderValue::from(port);
    if !grpc {
        let mut text = format!("Hello from {port}\n").into_bytes();
        text.extend_from_slice(&received);
        let response = Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .header("x-mock-port", port)
            .header("x-mock-connection", connection)
            .header("x-mock-protocol", "h2")
            .header("x-mock-path", parts.uri.path())
            .body(())
            .expect("a response");
        let mut send = respond.send_response(response, false)?;
        return send.send_data(Bytes::from(text), true);
    }
    let message = received.get(5..).unwrap_or_default().to_vec();
    let (messages, status): (Vec<Vec<u8>>, u16) = match parts.uri.path() {
        "/mock.Echo/Unary" => (vec![message], 0),
        "/mock.Echo/Stream" => (vec![message.clone(), message.clone(), message], 0),
        "/mock.Echo/Unavailable" => (Vec::new(), 14),
        _ => (Vec::new(), 12),
    };
    if messages.is_empty() {
        // Trailers only: the status in the one header block, which ends the stream.
        let response = Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", status)
            .header("grpc-message", "the mock answers this way")
            .header("x-mock-port", port)
            .body(())
            .expect("a response");
        respond.send_response(response, true)?;
        return Ok(());
    }
    let response = Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("x-mock-port", port)
        .body(())
        .expect("a response");
    let mut send = respond.send_response(response, false)?;
    for message in messages {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        send.send_data(Bytes::from(framed), false)?;
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    trailers.insert("x-mock-port", port_value);
    send.send_trailers(trailers)
}
