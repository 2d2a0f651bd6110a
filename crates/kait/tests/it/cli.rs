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

/// `kait listen` as a child process whose output lines are collected.
struct Listener {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Listener {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kait"))
            .arg("listen")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                collected.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    /// The first line containing `needle`, waiting up to ten seconds.
    async fn line_with(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|line| line.contains(needle))
            {
                return line.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no line with {needle:?} in {:?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kait_listen_prints_verifies_and_forwards() {
    let server = TestServer::start().await;
    let forward_target = Receiver::start().await;
    let app = server.create_app("listen").await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let listener = Listener::start(&[
        "--port",
        "0",
        "--secret",
        secret,
        "--forward",
        &forward_target.url,
    ]);
    let address = listener.line_with("kait listen on ").await;
    let url = format!("{}/hooks", address.trim_start_matches("kait listen on "));
    server
        .create_endpoint(&app, json!({ "url": url, "secret": secret }))
        .await;
    let msg_id = server
        .send(&app, "door.opened", json!({ "door": "back" }))
        .await;

    listener.line_with(&format!("id: {msg_id}")).await;
    listener.line_with("signature: valid").await;
    listener.line_with("\"door\": \"back\"").await;
    let forwarded = forward_target
        .wait_for(1, Duration::from_secs(10))
        .await
        .remove(0);
    assert_eq!(forwarded.header("webhook-id"), msg_id);
    assert_eq!(forwarded.json(), json!({ "door": "back" }));
    // The listener answered with the forward target's status, so the attempt succeeded.
    server
        .wait_until(
            &format!("/api/v1/app/{app}/msg/{msg_id}/endpoint"),
            Duration::from_secs(10),
            |body| body["data"][0]["status"] == 0,
        )
        .await;

    // Issue 11: a forged request is refused and not relayed, and the escape sequence in its
    // body reaches the terminal escaped.
    let forged = reqwest::Client::new()
        .post(&url)
        .header("webhook-id", "msg_forged")
        .header(
            "webhook-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header(
            "webhook-signature",
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .body("forged \u{1b}]0;owned\u{7} body")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), reqwest::StatusCode::UNAUTHORIZED);
    listener.line_with("id: msg_forged").await;
    let printed = listener.line_with("forged ").await;
    assert!(
        !printed.contains('\u{1b}'),
        "raw escape printed: {printed:?}"
    );
    assert!(printed.contains("\\u{1b}"), "{printed}");
    listener
        .line_with("not forwarded: the signature did not verify")
        .await;
    assert_eq!(
        forward_target.received().len(),
        1,
        "the forged request was relayed"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kait_listen_follows_a_polling_endpoint() {
    let server = TestServer::start().await;
    let app = server.create_app("listen-pull").await;
    let sink = server
        .create_endpoint(&app, json!({ "kind": "polling" }))
        .await;
    let sink = sink["id"].as_str().unwrap().to_owned();
    let (_, access) = server
        .post(&format!("/api/v1/auth/app-portal-access/{app}"), "{}")
        .await;
    let token = access["token"].as_str().unwrap().to_owned();
    let listener = Listener::start(&[
        "--pull",
        "--server",
        &server.base_url,
        "--token",
        &token,
        "--app",
        &app,
    ]);
    // Without --endpoint it finds the app's polling endpoint itself.
    listener
        .line_with(&format!(
            "kait listen following {}/api/v1/app/{app}/poller/{sink}",
            server.base_url
        ))
        .await;
    let msg_id = server.send(&app, "sensor.tick", json!({ "tick": 7 })).await;
    let line = listener.line_with(&msg_id).await;
    assert!(line.contains("sensor.tick"), "{line}");
    listener.line_with("\"tick\": 7").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kait_listen_downloads_attachments_in_both_modes() {
    use crate::attachments::{SNAPSHOT, clip, upload};
    use sha2::Digest;
    let server = TestServer::start().await;
    let app = server.create_app("listen-download").await;
    server
        .create_endpoint(&app, json!({ "kind": "polling" }))
        .await;
    let data = clip(3 * 1024 * 1024 + 17);
    let (_, uploaded) = upload(
        &server.base_url,
        &app,
        Some("video/mp4"),
        "?filename=door.mp4",
        data.clone(),
    )
    .await;
    let clip_id = uploaded["id"].as_str().unwrap().to_owned();
    let (_, snapshot) = upload(
        &server.base_url,
        &app,
        Some("image/jpeg"),
        "",
        SNAPSHOT.to_vec(),
    )
    .await;
    let snapshot_id = snapshot["id"].as_str().unwrap().to_owned();

    // Pull: the polling endpoint's links.
    let pulled = tempfile::tempdir().unwrap();
    let (_, access) = server
        .post(&format!("/api/v1/auth/app-portal-access/{app}"), "{}")
        .await;
    let token = access["token"].as_str().unwrap().to_owned();
    let puller = Listener::start(&[
        "--pull",
        "--server",
        &server.base_url,
        "--token",
        &token,
        "--app",
        &app,
        "--download",
        pulled.path().to_str().unwrap(),
    ]);
    puller.line_with("kait listen following").await;
    // Push: a webhook endpoint pointing at a second listener that verifies and downloads.
    let pushed = tempfile::tempdir().unwrap();
    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let endpoint = server
        .create_endpoint(
            &app,
            json!({ "url": format!("http://127.0.0.1:{port}/hooks"), "inlineAttachmentMaxBytes": 1024 }),
        )
        .await;
    let secret = server.secret(&app, endpoint["id"].as_str().unwrap()).await;
    let pusher = Listener::start(&[
        "--port",
        &port.to_string(),
        "--secret",
        &secret,
        "--download",
        pushed.path().to_str().unwrap(),
    ]);
    pusher.line_with("kait listen on").await;

    let (status, _) = server
        .post(
            &format!("/api/v1/app/{app}/msg"),
            &json!({ "eventType": "camera.motion", "payload": {}, "attachments": [clip_id, snapshot_id] })
                .to_string(),
        )
        .await;
    assert_eq!(status, axum::http::StatusCode::ACCEPTED);
    for listener in [&puller, &pusher] {
        listener.line_with(&format!("{clip_id}-door.mp4 (")).await;
        let line = listener.line_with(&format!("{snapshot_id} (")).await;
        assert!(line.contains("sha256 ok"), "{line}");
    }
    for dir in [pulled.path(), pushed.path()] {
        let saved = std::fs::read(dir.join(format!("{clip_id}-door.mp4"))).unwrap();
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&saved)),
            hex::encode(sha2::Sha256::digest(&data))
        );
        assert_eq!(std::fs::read(dir.join(&snapshot_id)).unwrap(), SNAPSHOT);
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            2,
            "nothing else is written"
        );
    }
    server.stop().await;
}

#[test]
fn cli_bad_input_fails_with_a_message() {
    for (args, expected) in [
        (vec!["listen", "--pull"], "--pull needs"),
        (vec!["listen", "--forward", "ftp://nowhere"], "--forward"),
        (
            vec!["listen", "--forward", "http://127.0.0.1:3000/hooks"],
            "--forward-unverified",
        ),
        (
            vec!["serve", "--admin-token-file", "/nonexistent/kait-token"],
            "--admin-token-file",
        ),
        (
            vec!["serve", "--secrets-key-file", "/nonexistent/kait.key"],
            "--secrets-key-file",
        ),
        (vec!["listen", "--secret", "not-a-secret"], "--secret"),
        (
            vec!["listen", "--download", "/tmp/kait-dl"],
            "--download in push mode",
        ),
        (
            vec![
                "serve",
                "--database-url",
                "postgres://127.0.0.1:1/none",
                "--data-dir",
                "/tmp/kait-node-1",
                "--blob-url",
                "file:///tmp/kait-node-1/blobs",
            ],
            "inside this node's data dir",
        ),
        (vec!["serve", "--blob-url", "gs://bucket"], "--blob-url"),
        (vec!["serve", "--mqtt-url", "http://broker"], "--mqtt-url"),
        (
            vec!["serve", "--mqtt-client-id", "x"],
            "--mqtt-client-id needs --mqtt-url",
        ),
        (
            vec!["serve", "--mqtt-shared-group", "g"],
            "--mqtt-shared-group needs --mqtt-url",
        ),
        (
            vec![
                "serve",
                "--mqtt-url",
                "mqtt://127.0.0.1",
                "--mqtt-command-topic",
                "cmd/{name}",
            ],
            "--mqtt-command-topic",
        ),
        (
            vec![
                "serve",
                "--mqtt-url",
                "mqtt://127.0.0.1",
                "--mqtt-reply-topic",
                "replies/#",
            ],
            "--mqtt-reply-topic",
        ),
        (
            vec![
                "serve",
                "--mqtt-url",
                "mqtt://127.0.0.1",
                "--mqtt-shared-group",
                "a/b",
            ],
            "--mqtt-shared-group",
        ),
        (
            vec!["verify", "--secret", "whsec_x", "--tolerance", "soon"],
            "--tolerance",
        ),
        (
            vec!["serve", "--retry-schedule", "5s,later"],
            "retry-schedule",
        ),
        (
            vec!["migrate", "--database-url", "postgres://127.0.0.1:1/none"],
            "migrating the PostgreSQL schema",
        ),
        (
            vec!["serve", "--database-url", "http://not-postgres"],
            "--database-url",
        ),
        (
            vec!["migrate", "--database-schema", "kait"],
            "needs --database-url",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_kait"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// `kait migrate` creates the schema of the configured backend and is a no-op the second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kait_migrate_brings_the_schema_up_to_date() {
    let storage = crate::support::Storage::new().await;
    let migrate = || {
        let output = Command::new(env!("CARGO_BIN_EXE_kait"))
            .arg("migrate")
            .args(storage.flags())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let first = migrate();
    let second = migrate();
    match &storage.schema {
        Some(schema) => {
            assert!(
                first.contains(&format!("schema {schema} is up to date")),
                "{first}"
            );
            assert!(!first.contains("(0 migrations"), "{first}");
            assert!(second.contains("(0 migrations applied)"), "{second}");
            let tables: i64 = storage
                .sql()
                .await
                .query_one(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
                    &[schema],
                )
                .await
                .unwrap()
                .get(0);
            assert!(tables >= 10, "{tables} tables");
        }
        None => {
            assert!(first.contains("is up to date"), "{first}");
            assert!(storage.data_dir.path().join("kait.db").exists());
        }
    }
    storage.remove().await;
}
