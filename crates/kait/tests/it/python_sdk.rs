//! The official Svix Python SDK, current and older generation, against Kait.
//!
//! `compat/python/setup.sh` installs each SDK into a venv outside the clone (`.ci/run` does
//! this first). The tests are ignored by default (they need the venvs) and run with
//! `-- --ignored`, as CI does; a missing venv then fails with what to run.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{ADMIN_TOKEN, Receiver, TestServer, assert_signed, assert_signed_bytes};

fn sdk_python(sdk: &str) -> PathBuf {
    let root = std::env::var("KAIT_PY_SDK_DIR").unwrap_or_else(|_| "/var/tmp/kait-svix-py".into());
    let python = PathBuf::from(format!("{root}-{sdk}/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run bash compat/python/setup.sh",
        python.display()
    );
    python
}

/// Runs `compat/python/{script}` with the SDK's interpreter against the server (and the
/// receiver, when given); returns the words of the last line it printed.
async fn run_script(
    sdk: &str,
    script: &str,
    server: &TestServer,
    receiver: Option<&Receiver>,
) -> Vec<String> {
    let path = format!(
        "{}/../../compat/python/{script}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut args = vec![path, server.base_url.clone(), ADMIN_TOKEN.to_owned()];
    args.extend(receiver.map(|receiver| receiver.url.clone()));
    let output = tokio::process::Command::new(sdk_python(sdk))
        .args(&args)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} with svix {sdk} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.trim().rsplit('\n').next().unwrap_or_default();
    last.split(' ').map(str::to_owned).collect()
}

async fn drive_with(sdk: &str) {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let words = run_script(sdk, "svix_compat.py", &server, Some(&receiver)).await;
    let (msg_id, secret) = (words[3].as_str(), words[4].as_str());
    let received = receiver.wait_for(2, Duration::from_secs(10)).await;
    for webhook in &received {
        assert_eq!(webhook.header("webhook-id"), msg_id);
        assert_eq!(webhook.header("x-python"), sdk);
        assert_signed(webhook, secret);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Svix Python SDK venvs (bash compat/python/setup.sh): run with -- --ignored; CI does"]
async fn current_python_sdk() {
    drive_with("2.9.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Svix Python SDK venvs (bash compat/python/setup.sh): run with -- --ignored; CI does"]
async fn older_python_sdk() {
    drive_with("1.45.0").await;
}

/// Issue 13's end-to-end check: the current SDK sets up Svix Ingest sources and endpoints;
/// provider-signed requests (signed in Python) are forwarded re-signed by Kait and verified
/// with the independent `standardwebhooks` library; bad and replayed ones are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Svix Python SDK venvs (bash compat/python/setup.sh): run with -- --ignored; CI does"]
async fn python_sdk_sets_up_ingest_and_signed_requests_are_forwarded() {
    let server = TestServer::start().await;
    let words = run_script("2.9.1", "ingest_compat.py", &server, None).await;
    assert!(
        words.join(" ").starts_with("ingest 5 forwarded"),
        "{words:?}"
    );
    server.stop().await;
}

/// Issue 15: `message_in_raw` from both SDK generations: an XML and a plain-text body reach
/// the endpoint byte for byte, with their content types, signed over those bytes.
async fn raw_messages_with(sdk: &str) {
    let python = sdk_python(sdk);
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../compat/python/raw_compat.py"
    );
    let output = tokio::process::Command::new(python)
        .args([script, &server.base_url, ADMIN_TOKEN, &receiver.url])
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "raw messages with svix {sdk} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let words: Vec<&str> = stdout
        .trim()
        .rsplit('\n')
        .next()
        .unwrap()
        .split(' ')
        .collect();
    let (secret, xml_id, text_id) = (words[3], words[4], words[5]);
    let received = receiver.wait_for(2, Duration::from_secs(10)).await;
    let expected = [
        (
            xml_id,
            "application/xml",
            "<?xml version=\"1.0\"?>\n<reading  unit=\"C\">  21.5 </reading>\n",
        ),
        (
            text_id,
            "text/plain; charset=utf-8",
            "motion at  the door\r\nsecond line, not minified\n",
        ),
    ];
    for (msg_id, content_type, body) in expected {
        let webhook = received
            .iter()
            .find(|webhook| webhook.header("webhook-id") == msg_id)
            .unwrap_or_else(|| panic!("no webhook for {msg_id}"));
        assert_eq!(webhook.header("content-type"), content_type);
        assert_eq!(&webhook.body[..], body.as_bytes());
        assert_signed_bytes(webhook, secret);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Svix Python SDK venvs (bash compat/python/setup.sh): run with -- --ignored; CI does"]
async fn current_python_sdk_sends_raw_messages() {
    raw_messages_with("2.9.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Svix Python SDK venvs (bash compat/python/setup.sh): run with -- --ignored; CI does"]
async fn older_python_sdk_sends_raw_messages() {
    raw_messages_with("1.45.0").await;
}
