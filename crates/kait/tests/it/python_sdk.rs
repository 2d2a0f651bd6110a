//! The official Svix Python SDK, current and older generation, against Kait.
//!
//! `compat/python/setup.sh` installs each SDK into a venv outside the clone (`.ci/run` does
//! this first). The tests are ignored by default (they need the venvs) and run with
//! `-- --ignored`, as CI does; a missing venv then fails with what to run.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{ADMIN_TOKEN, Receiver, TestServer, assert_signed};

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

async fn drive_with(sdk: &str) {
    let python = sdk_python(sdk);
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../compat/python/svix_compat.py"
    );
    let output = tokio::process::Command::new(python)
        .args([script, &server.base_url, ADMIN_TOKEN, &receiver.url])
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "svix {sdk} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let words: Vec<&str> = stdout
        .trim()
        .rsplit('\n')
        .next()
        .unwrap()
        .split(' ')
        .collect();
    let (msg_id, secret) = (words[3], words[4]);
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
    let python = sdk_python("2.9.1");
    let server = TestServer::start().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../compat/python/ingest_compat.py"
    );
    let output = tokio::process::Command::new(python)
        .args([script, &server.base_url, ADMIN_TOKEN])
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ingest with svix 2.9.1 failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ingest 5 forwarded"), "{stdout}");
    server.stop().await;
}
