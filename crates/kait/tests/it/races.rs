//! Issue 12: concurrent changes of one endpoint or application over HTTP. Each change is a
//! read-modify-write that the store refuses when another change came in between, and the API
//! makes again on top of it, so no answered change is silently undone. Before the fix, a
//! rotation racing a `PUT …/headers` was undone in most trials (its new secret, already
//! returned, stored nowhere), and of two racing rotations one returned secret was lost.

use reqwest::{Method, StatusCode};
use serde_json::json;

use std::time::Duration;

use crate::support::{Receiver, TestServer, assert_signed};

const WAIT: Duration = Duration::from_secs(10);

const TRIALS: usize = 20;

/// A rotation racing a header change: the secret the rotation returned is the one stored,
/// and the headers are there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_racing_a_header_change_is_never_undone() {
    let server = TestServer::start().await;
    let app = server.create_app("races").await;
    let endpoint = server
        .create_endpoint(&app, json!({ "url": "http://127.0.0.1:9/hook" }))
        .await;
    let endpoint = endpoint["id"].as_str().unwrap();
    let base = format!("/api/v1/app/{app}/endpoint/{endpoint}");
    for trial in 0..TRIALS {
        let headers = json!({ "headers": { "x-trial": trial.to_string() } }).to_string();
        let (rotate_path, headers_path) =
            (format!("{base}/secret/rotate"), format!("{base}/headers"));
        let ((rotated, secret), (put, _)) = tokio::join!(
            server.request(Method::POST, &rotate_path, Some("{}")),
            server.request(Method::PUT, &headers_path, Some(&headers)),
        );
        assert_eq!(rotated, StatusCode::OK, "{secret}");
        assert_eq!(put, StatusCode::NO_CONTENT);
        assert_eq!(
            server.secret(&app, endpoint).await,
            secret["key"].as_str().unwrap(),
            "trial {trial}: the rotated secret was undone"
        );
        let (_, stored) = server.get(&format!("{base}/headers")).await;
        assert_eq!(stored["headers"]["x-trial"], json!(trial.to_string()));
    }
}

/// Two rotations at once: the secret of the one that landed last is current, and the other
/// one's is the secret it replaced, which keeps signing during the grace period: the next
/// webhook verifies with either returned secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_rotations_keep_both_returned_secrets_verifying() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app = server.create_app("rotations").await;
    let endpoint = server
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    let endpoint = endpoint["id"].as_str().unwrap();
    let rotate_path = format!("/api/v1/app/{app}/endpoint/{endpoint}/secret/rotate");
    for trial in 0..TRIALS {
        let ((first_status, first), (second_status, second)) = tokio::join!(
            server.request(Method::POST, &rotate_path, Some("{}")),
            server.request(Method::POST, &rotate_path, Some("{}")),
        );
        assert_eq!(first_status, StatusCode::OK, "{first}");
        assert_eq!(second_status, StatusCode::OK, "{second}");
        let current = server.secret(&app, endpoint).await;
        let (first, second) = (
            first["key"].as_str().unwrap(),
            second["key"].as_str().unwrap(),
        );
        assert!(
            current == first || current == second,
            "trial {trial}: the current secret is neither returned one"
        );
        server.send(&app, "a.b", json!({ "trial": trial })).await;
        let webhook = &receiver.wait_for(trial + 1, WAIT).await[trial];
        assert_signed(webhook, first);
        assert_signed(webhook, second);
    }
}

/// Two PATCHes of different fields of one application at once: both fields end up stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_application_patches_both_survive() {
    let server = TestServer::start().await;
    let app = server.create_app("patches").await;
    let path = format!("/api/v1/app/{app}");
    for trial in 0..TRIALS {
        let name = json!({ "name": format!("name-{trial}") }).to_string();
        let metadata = json!({ "metadata": { "trial": trial.to_string() } }).to_string();
        let ((renamed, _), (tagged, _)) = tokio::join!(
            server.request(Method::PATCH, &path, Some(&name)),
            server.request(Method::PATCH, &path, Some(&metadata)),
        );
        assert_eq!((renamed, tagged), (StatusCode::OK, StatusCode::OK));
        let (_, stored) = server.get(&path).await;
        assert_eq!(
            stored["name"],
            json!(format!("name-{trial}")),
            "trial {trial}"
        );
        assert_eq!(stored["metadata"]["trial"], json!(trial.to_string()));
    }
}
