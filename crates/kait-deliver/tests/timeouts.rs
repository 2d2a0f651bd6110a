//! The connect timeout, against a loopback listener whose accept queue is full: the kernel
//! drops further SYNs, so a connection attempt hangs the way it does to a host that is down.

use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use kait_core::signing::Secret;
use kait_deliver::{AttemptResult, EgressPolicy, SendError, Sender, SenderConfig, Target, Webhook};
use tokio::net::{TcpSocket, TcpStream};

#[tokio::test]
async fn an_unanswered_connect_gives_up_at_the_connect_timeout() {
    // Backlog 1 and never accepted: after a couple of connections the queue is full.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let address = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(address)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(error)) => panic!("filling the accept queue: {error}"),
            // This one hangs: the queue is full.
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "the accept queue never filled");
    }

    let sender = Sender::new(
        SenderConfig {
            connect_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_secs(10),
            ..SenderConfig::default()
        },
        EgressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]),
    )
    .unwrap();
    let target = Target::parse(&format!("http://{address}/webhook")).unwrap();
    let key = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .unwrap()
        .signing_key();
    let result = sender
        .send(Webhook {
            target: &target,
            method: http::Method::POST,
            msg_id: "msg_connect",
            timestamp: 1_700_000_000,
            body: Bytes::from_static(b"{}"),
            content_type: http::HeaderValue::from_static("application/json"),
            message_headers: None,
            trace_parent: None,
            signing_key: &key,
            previous_signing_key: None,
            custom_headers: &HeaderMap::new(),
        })
        .await;
    match result {
        AttemptResult::NoResponse {
            error: SendError::Timeout,
            duration,
        } => {
            // The connect timeout ended it, not the ten-second request timeout.
            assert!(duration < Duration::from_secs(5), "took {duration:?}");
            assert!(duration >= Duration::from_millis(300), "took {duration:?}");
        }
        other => panic!("expected a connect timeout, got {other:?}"),
    }
    drop(listener);
}
