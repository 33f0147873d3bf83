//! XMPP over WebSocket (RFC 7395): the upgrade and the pump between the
//! WebSocket and the framed c2s stream.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};

use super::{Listener, Peer};
use crate::framed::{FrameIn, FrameOut, Framed, Kind};

/// The RFC 7395 §3.1 subprotocol.
const SUBPROTOCOL: &str = "xmpp";
/// How long the client may take to answer our WebSocket close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// `GET /xmpp-websocket`: RFC 7395 §3.1. Without the `xmpp` subprotocol
/// the upgrade is refused (400): a connection without it would not be an
/// XMPP one, and the client would have to drop it anyway.
pub(super) async fn upgrade(
    State(l): State<Listener>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    ws: WebSocketUpgrade,
) -> Response {
    let ws = ws.protocols([SUBPROTOCOL]);
    if ws.selected_protocol().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "RFC 7395 §3.1: the WebSocket subprotocol 'xmpp' is required\n",
        )
            .into_response();
    }
    let Some(permit) = l.web.admit() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not accepting streams\n").into_response();
    };
    let c2s = l.web.c2s.clone();
    let secure = l.secure;
    // One message carries one stanza at most (plus its framing).
    let max = c2s.config.max_stanza_bytes + 1024;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            run(c2s, socket, peer, secure).await;
            drop(permit);
        })
}

/// Runs the c2s stream over one WebSocket: a reader (WebSocket → stream),
/// a writer (stream → WebSocket) and the stream itself, until all three
/// are done.
async fn run(
    c2s: std::sync::Arc<crate::C2s>,
    socket: WebSocket,
    peer: std::net::SocketAddr,
    secure: bool,
) {
    let (mut sink, mut stream) = socket.split();
    let (in_tx, in_rx) = mpsc::channel(16);
    let (out_tx, mut out_rx) = mpsc::channel(64);
    let limits = c2s.config.limits();
    let framed = Framed::new(in_rx, out_tx, secure, Kind::WebSocket, limits);
    let (done_tx, mut done) = watch::channel(false);

    let conn = crate::conn::run_framed(c2s, framed, peer);
    let writer = async move {
        while let Some(m) = out_rx.recv().await {
            let msg = match m {
                FrameOut::Text(t) => Message::text(t),
                FrameOut::Ping => Message::Ping(Default::default()),
            };
            if sink.send(msg).await.is_err() {
                break;
            }
        }
        // RFC 7395 §3.6: after <close/>, the WebSocket closing handshake.
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: axum::extract::ws::close_code::NORMAL,
                reason: Default::default(),
            })))
            .await;
        let _ = done_tx.send(true);
    };
    let reader = async move {
        let closing = async {
            let _ = done.wait_for(|d| *d).await;
            tokio::time::sleep(CLOSE_WAIT).await;
        };
        tokio::pin!(closing);
        loop {
            let m = tokio::select! {
                m = stream.next() => m,
                _ = &mut closing => break,
            };
            let input = match m {
                Some(Ok(Message::Text(t))) => FrameIn::Text(t.as_str().to_owned()),
                Some(Ok(Message::Binary(_))) => FrameIn::Binary,
                // Pings are answered by tungstenite; either proves the peer alive.
                Some(Ok(Message::Pong(_) | Message::Ping(_))) => FrameIn::Alive,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            };
            if in_tx.send(input).await.is_err() {
                // The stream ended; wait for the close (or give up).
                (&mut closing).await;
                break;
            }
        }
        // Dropping `in_tx` ends the stream if it still runs.
    };
    tokio::join!(conn, writer, reader);
}
