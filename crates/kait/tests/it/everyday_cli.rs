//! The everyday commands (`kait send`, `tail`, `replay`, `… list`, `portal`) as the binary a
//! user runs, against a running server, with the server and token from the environment or a
//! profile file, and every failure a message and a non-zero exit.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Receiver, TestServer, source_with_endpoint};

const WAIT: Duration = Duration::from_secs(15);

/// `kait ARGS` against `server` (environment only: no profile file, no local token).
fn kait(server: &TestServer, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kait"));
    command
        .args(args)
        .env_clear()
        .env("KAIT_SERVER_URL", &server.base_url)
        .env("KAIT_TOKEN", ADMIN_TOKEN)
        .env("HOME", std::env::temp_dir().join("kait-cli-test-no-home"))
        .stdin(Stdio::null());
    command
}

async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_lists_and_portal_from_the_command_line() {
    let server = TestServer::start().await;
    let app = server.create_app("Site 7").await;
    server
        .create_endpoint(
            &app,
            json!({"url": "http://127.0.0.1:9/gate", "filterTypes": ["camera.motion"]}),
        )
        .await;
    let receiver = Receiver::start().await;
    source_with_endpoint(
        &server.http,
        &server.base_url,
        json!({"name": "github", "type": "github", "config": {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}),
        &receiver.url,
    )
    .await;
    let (status, _) = server
        .post(
            "/api/v1/pipe",
            &crate::pipes::abandoned_cart_pipe(&app, 60_000).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // send: from an argument and from standard input; the id printed is the message's.
    let output = run(kait(
        &server,
        &["send", &app, "camera.motion", r#"{"camera": "gate"}"#],
    ))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let msg_id = stdout(&output).trim().to_owned();
    let (status, message) = server.get(&format!("/api/v1/app/{app}/msg/{msg_id}")).await;
    assert_eq!(status, StatusCode::OK, "{message}");
    assert_eq!(message["payload"], json!({"camera": "gate"}));
    let mut piped = kait(
        &server,
        &[
            "send",
            &app,
            "door.opened",
            "--event-id",
            "door-1",
            "--json",
        ],
    );
    piped.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = piped.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"door": "north"}"#)
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let sent: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(sent["eventId"], "door-1");
    assert_eq!(sent["payload"], json!({"door": "north"}));

    // Lists as tables, and as JSON for scripts.
    let output = run(kait(&server, &["app", "list"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&app) && table.contains("Site 7"), "{table}");
    let output = run(kait(&server, &["app", "list", "--json"])).await;
    let apps: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(
        apps.as_array()
            .unwrap()
            .iter()
            .any(|listed| listed["id"] == app.as_str())
    );
    let output = run(kait(&server, &["endpoint", "list", &app])).await;
    let table = stdout(&output);
    assert!(
        table.contains("http://127.0.0.1:9/gate") && table.contains("camera.motion"),
        "{table}"
    );
    let output = run(kait(&server, &["source", "list"])).await;
    let table = stdout(&output);
    assert!(
        table.contains("github") && table.contains("/ingest/api/v1/source/"),
        "{table}"
    );
    let output = run(kait(&server, &["pipe", "list", "--json"])).await;
    let pipes: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(pipes[0]["name"], "abandoned carts");
    let output = run(kait(&server, &["pipe", "list"])).await;
    assert!(stdout(&output).contains("abandoned carts"));

    // portal: a link whose token (in the fragment) reads this application only.
    let output = run(kait(&server, &["portal", &app, "--read-only"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let link = stdout(&output).trim().to_owned();
    let token = link.split("token=").nth(1).expect("a token in the link");
    let (status, _) = server
        .request_with(
            reqwest::Method::GET,
            &format!("/api/v1/app/{app}/msg"),
            None,
            Some(token),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{link}");
    let (status, _) = server
        .request_with(reqwest::Method::GET, "/api/v1/app", None, Some(token), &[])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The same from a profile file instead of the environment.
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles.toml");
    std::fs::write(
        &profiles,
        format!(
            "[staging]\nserver_url = \"{}\"\ntoken = \"{ADMIN_TOKEN}\"\n",
            server.base_url
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_kait"));
    command
        .args(["app", "list", "--profile", "staging"])
        .env_clear()
        .env("KAIT_PROFILES", &profiles);
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains(&app));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_an_application_live_by_event_type() {
    let server = TestServer::start().await;
    let app = server.create_app("tailed").await;
    let earlier = server.send(&app, "camera.motion", json!({"n": 0})).await;
    let mut command = kait(
        &server,
        &[
            "tail",
            &app,
            "--event-type",
            "camera.motion",
            "--json",
            "--count",
            "2",
        ],
    );
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    // It says when it follows; what is accepted from then on is shown.
    let mut stderr_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::task::spawn_blocking(move || stderr_lines.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.contains("following"), "{first}");
    let wanted_1 = server.send(&app, "camera.motion", json!({"n": 1})).await;
    server.send(&app, "door.opened", json!({"n": 2})).await;
    let wanted_2 = server.send(&app, "camera.motion", json!({"n": 3})).await;
    let output = tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .expect("tail stops after --count")
    .unwrap();
    assert!(output.status.success());
    let lines: Vec<Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let ids: Vec<&str> = lines
        .iter()
        .map(|line| line["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [wanted_1.as_str(), wanted_2.as_str()],
        "not {earlier}, not the door"
    );
    assert_eq!(lines[1]["payload"], json!({"n": 3}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sends_failures_again_and_waits_for_them() {
    let server = TestServer::start().await;
    let healthy = Arc::new(AtomicBool::new(false));
    let receiver = {
        let healthy = healthy.clone();
        Receiver::start_with(move |_, _| {
            if healthy.load(Ordering::SeqCst) {
                StatusCode::OK
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        })
        .await
    };
    let app = server.create_app("replayed").await;
    let endpoint = server
        .create_endpoint(&app, json!({"url": receiver.url}))
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    for n in 0..3 {
        server.send(&app, "a.b", json!({"n": n})).await;
    }
    // Out of retries (the test server retries twice, quickly): three failures.
    server
        .wait_until(
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}/stats"),
            WAIT,
            |stats| stats["fail"] == 3,
        )
        .await;
    healthy.store(true, Ordering::SeqCst);
    let before = receiver.count();
    let output = run(kait(
        &server,
        &["replay", &app, "--since", "1h", "--endpoint", &endpoint_id],
    ))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let said = stdout(&output);
    assert!(
        said.contains("3 deliveries made due again at 1 endpoint"),
        "{said}"
    );
    assert!(said.contains("done"), "{said}");
    let received = receiver.wait_for(before + 3, WAIT).await;
    let mut replayed: Vec<i64> = received[before..]
        .iter()
        .map(|webhook| webhook.json()["n"].as_i64().unwrap())
        .collect();
    replayed.sort();
    assert_eq!(replayed, [0, 1, 2]);
    let (_, stats) = server
        .get(&format!("/api/v1/app/{app}/endpoint/{endpoint_id}/stats"))
        .await;
    assert_eq!(stats["success"], 3, "{stats}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_is_a_message_and_a_non_zero_exit() {
    let server = TestServer::start().await;
    let app = server.create_app("strict").await;
    let cases: Vec<(Command, &str)> = vec![
        (
            kait(&server, &["send", &app, "a.b", "not json"]),
            "not JSON",
        ),
        (
            kait(&server, &["send", &app, "a.b", "[1, 2]"]),
            "JSON object",
        ),
        (
            kait(&server, &["send", &app, "bad type!", "{}"]),
            "422 validation_error",
        ),
        (kait(&server, &["send", "app_none", "a.b", "{}"]), "404"),
        (kait(&server, &["endpoint", "list"]), "which application"),
        (kait(&server, &["app", "list", &app]), "unexpected argument"),
        (
            kait(&server, &["replay", &app, "--since", "someday"]),
            "RFC 3339",
        ),
        (kait(&server, &["portal", "app_none"]), "404"),
        (
            {
                let mut command = kait(&server, &["app", "list"]);
                command.env("KAIT_TOKEN", "wrong");
                command
            },
            "401",
        ),
        (
            {
                let mut command = kait(&server, &["app", "list"]);
                command.env("KAIT_SERVER_URL", "http://127.0.0.1:9");
                command
            },
            "cannot reach the server",
        ),
        (
            {
                let mut command = kait(&server, &["app", "list", "--profile", "nope"]);
                command.env("KAIT_PROFILES", "/nonexistent/profiles.toml");
                command
            },
            "profiles",
        ),
    ];
    for (command, expected) in cases {
        let described = format!("{command:?}");
        let output = run(command).await;
        assert!(!output.status.success(), "{described} succeeded");
        let said = stderr(&output);
        assert!(said.starts_with("kait: "), "{described}: {said}");
        assert!(said.contains(expected), "{described}: {said}");
        assert_eq!(said.trim().lines().count(), 1, "one line: {said}");
    }
    let (_, messages) = server.get(&format!("/api/v1/app/{app}/msg")).await;
    assert!(
        messages["data"].as_array().unwrap().is_empty(),
        "nothing was sent"
    );
    server.stop().await;
}
