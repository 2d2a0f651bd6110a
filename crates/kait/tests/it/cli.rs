//! The command-line tools, run as the binary a user runs.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::{Received, Receiver, TestServer};

/// The webhook as it arrived, written out as `kait verify` reads it.
fn as_saved_request(webhook: &Received) -> Vec<u8> {
    let mut raw = b"POST /webhook HTTP/1.1\r\n".to_vec();
    for (name, value) in &webhook.headers {
        raw.extend_from_slice(format!("{name}: {}\r\n", value.to_str().unwrap()).as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(&webhook.body);
    raw
}

fn verify(raw: &[u8], secret: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kait"))
        .args(["verify", "--secret", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(raw).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kait_verify_checks_a_real_webhook() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app = server.create_app("verify").await;
    let endpoint = server
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    let secret = server.secret(&app, endpoint["id"].as_str().unwrap()).await;
    let msg_id = server.send(&app, "a.b", json!({ "door": "open" })).await;
    let webhook = receiver
        .wait_for(1, Duration::from_secs(10))
        .await
        .remove(0);
    let raw = as_saved_request(&webhook);

    let (valid, text) = verify(&raw, &secret);
    assert!(valid, "{text}");
    assert!(text.contains(&msg_id), "{text}");

    let (valid, text) = verify(&raw, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    assert!(!valid);
    assert!(text.contains("no signature matches"), "{text}");

    let mut tampered = raw.clone();
    tampered.extend_from_slice(b" ");
    assert!(!verify(&tampered, &secret).0);

    let (valid, text) = verify(b"garbage without a blank line", &secret);
    assert!(!valid);
    assert!(text.contains("blank line"), "{text}");
    server.stop().await;
}
