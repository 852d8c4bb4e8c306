//! The mock's small gRPC service (HTTP/2 requests with a gRPC content type), with gRPC's
//! framing written out (a flag byte and a 4-byte length before each message), so that demos
//! and tests need nothing generated:
//!
//! - `/mock.Echo/Unary`: answers the request message as it came;
//! - `/mock.Echo/Stream`: answers it three times (server streaming);
//! - `/mock.Echo/Unavailable`: fails with `grpc-status: 14` (trailers only);
//! - any other method: `grpc-status: 12` (UNIMPLEMENTED).
//!
//! Every answer carries `x-mock-port` (in its trailers too).

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, Version};
use hyper::body::Frame;

use crate::answer::Frames;

/// Whether the request is a gRPC call: HTTP/2 with a gRPC content type.
pub(crate) fn is_grpc(request: &Parts) -> bool {
    request.version == Version::HTTP_2
        && request
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The answer to the call `request` with its body `received` (one framed message).
pub(crate) fn answer(request: &Parts, received: &[u8], port: u16) -> Response<Frames> {
    let message = received.get(5..).unwrap_or_default().to_vec();
    let (messages, status): (Vec<Vec<u8>>, u16) = match request.uri.path() {
        "/mock.Echo/Unary" => (vec![message], 0),
        "/mock.Echo/Stream" => (vec![message.clone(), message.clone(), message], 0),
        "/mock.Echo/Unavailable" => (Vec::new(), 14),
        _ => (Vec::new(), 12),
    };
    let response = Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("x-mock-port", port);
    if messages.is_empty() {
        // Trailers only: the status in the one header block, which ends the stream.
        return response
            .header("grpc-status", status)
            .header("grpc-message", "the mock answers this way")
            .body(Frames::new([]))
            .expect("a response");
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    trailers.insert("x-mock-port", HeaderValue::from(port));
    let frames = messages
        .into_iter()
        .map(|message| {
            let mut framed = vec![0u8];
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(&message);
            Frame::data(framed.into())
        })
        .chain([Frame::trailers(trailers)]);
    response.body(Frames::new(frames)).expect("a response")
}
