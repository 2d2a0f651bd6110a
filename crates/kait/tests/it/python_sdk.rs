//! The official Svix Python SDK, current and older generation, against Kait.
//!
//! `compat/python/setup.sh` installs each SDK into a venv outside the clone (`.ci/run` does
//! this first). Locally a missing venv skips with a message; under `CI` it fails.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{ADMIN_TOKEN, Receiver, TestServer, assert_signed};

fn sdk_python(sdk: &str) -> Option<PathBuf> {
    let root = std::env::var("KAIT_PY_SDK_DIR").unwrap_or_else(|_| "/var/tmp/kait-svix-py".into());
    let python = PathBuf::from(format!("{root}-{sdk}/bin/python"));
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: run compat/python/setup.sh",
        python.display()
    );
    eprintln!(
        "skipped: {} is missing (run compat/python/setup.sh)",
        python.display()
    );
    None
}

async fn drive_with(sdk: &str) {
    let Some(python) = sdk_python(sdk) else {
        return;
    };
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
async fn current_python_sdk() {
    drive_with("2.9.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_python_sdk() {
    drive_with("1.45.0").await;
}
