//! `GET /stream`: a live stream as server-sent events. The application
//! layer decides what each message is for the caller; this only frames it
//! (axum's SSE writer) and keeps the connection alive.

use std::convert::Infallible;

use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use crate::app::live::{Frame, LiveStream};

/// The response of an opened stream: the stream runs in its own task and
/// writes into the response body until one side ends it.
pub fn response(live: LiveStream) -> Response {
    let keepalive = live.keepalive();
    // Frames waiting for the socket: a client that does not read fills
    // this, and is dropped then.
    let (tx, rx) = mpsc::channel(live.buffer().max(1));
    tokio::spawn(live.run(tx));
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let frame = rx.recv().await?;
        Some((Ok::<_, Infallible>(event_of(frame)), rx))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keepalive).text("keep-alive"))
        .into_response();
    // Proxies (nginx, the BFF) must pass each message on as it comes.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn event_of(frame: Frame) -> Event {
    match frame {
        Frame::Message { id, event, data } => {
            Event::default().id(id.to_string()).event(event).data(data)
        }
        Frame::Reset { id } => Event::default()
            .id(id.to_string())
            .event("reset")
            .data("{}"),
    }
}
