//! Issue 13 (in progress): incoming sources through `/ingest/api/v1/source`, Svix Ingest's
//! routes and shapes. (The official Python SDK drives the same routes in `python_sdk.rs`.)

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_managed_and_never_show_their_secrets() {
    let server = TestServer::start().await;
    let body = json!({
        "name": "GitHub",
        "uid": "github",
        "type": "github",
        "config": { "secret": "It's a Secret to Everybody" },
        "metadata": { "team": "video" }
    });
    let (status, created) = server
        .post("/ingest/api/v1/source", &body.to_string())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("src_"));
    let ingest_url = created["ingestUrl"].as_str().unwrap().to_owned();
    assert!(
        ingest_url.starts_with(&format!(
            "{}/ingest/api/v1/source/{id}/in/",
            server.base_url
        )),
        "{ingest_url}"
    );
    assert_eq!(created["config"], json!({}));
    assert!(!created.to_string().contains("Secret to Everybody"));

    let (status, by_uid) = server.get("/ingest/api/v1/source/github").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_uid["id"], json!(id));
    assert_eq!(by_uid["ingestUrl"], json!(ingest_url));
    let (_, listed) = server.get("/ingest/api/v1/source").await;
    assert_eq!(listed["data"][0]["id"], json!(id));
    assert_eq!(listed["done"], json!(true));

    let (status, rotated) = server
        .post(&format!("/ingest/api/v1/source/{id}/token/rotate"), "")
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_ne!(rotated["ingestUrl"], json!(ingest_url));
    let (_, after) = server.get(&format!("/ingest/api/v1/source/{id}")).await;
    assert_eq!(after["ingestUrl"], rotated["ingestUrl"]);

    let replacement = json!({ "name": "GitHub (main)", "type": "github", "config": {} });
    let (status, replaced) = server
        .request(
            Method::PUT,
            &format!("/ingest/api/v1/source/{id}"),
            Some(&replacement.to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["name"], json!("GitHub (main)"));
    assert_eq!(
        replaced["uid"],
        json!("github"),
        "PUT keeps the uid it was not given"
    );
    assert_eq!(replaced["ingestUrl"], rotated["ingestUrl"], "and the token");
    let cron = json!({
        "name": "nightly",
        "type": "cron",
        "config": { "schedule": "0 3 * * *", "payload": "{}" }
    });
    let (status, upserted) = server
        .request(
            Method::PUT,
            "/ingest/api/v1/source/nightly",
            Some(&cron.to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{upserted}");
    assert_eq!(upserted["uid"], json!("nightly"));
    assert_eq!(upserted["config"]["schedule"], json!("0 3 * * *"));

    let (status, _) = server
        .request(Method::DELETE, &format!("/ingest/api/v1/source/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server.get(&format!("/ingest/api/v1/source/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sources_are_refused_with_every_problem() {
    let server = TestServer::start().await;
    let problems = |body: serde_json::Value| {
        let server = &server;
        async move {
            let (status, answer) = server
                .post("/ingest/api/v1/source", &body.to_string())
                .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
            answer["detail"]
                .as_array()
                .unwrap()
                .iter()
                .map(|problem| problem["loc"].clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        problems(json!({ "name": "", "type": "carrier-pigeon", "config": {} })).await,
        vec![json!(["body", "name"]), json!(["body", "type"])]
    );
    assert_eq!(
        problems(json!({ "name": "s", "type": "stripe", "config": {} })).await,
        vec![json!(["body", "config", "secret"])]
    );
    assert_eq!(
        problems(json!({ "name": "s", "type": "stripe", "config": { "secert": "x" } })).await,
        vec![json!(["body", "config", "secert"])]
    );
    assert_eq!(
        problems(json!({ "name": "s", "type": "svix", "config": { "secret": "whsec_%%" } })).await,
        vec![json!(["body", "config", "secret"])]
    );
    assert_eq!(
        problems(json!({ "name": "s", "type": "github", "config": null })).await,
        vec![json!(["body", "config"])]
    );
    // A uid that looks like an id would make `/source/{source_id}` ambiguous.
    assert_eq!(
        problems(json!({ "name": "s", "uid": "src_mine", "type": "github" })).await,
        vec![json!(["body", "uid"])]
    );
    let (status, _) = server
        .post(
            "/ingest/api/v1/source",
            &json!({ "name": "a", "uid": "dup", "type": "github" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, answer) = server
        .post(
            "/ingest/api/v1/source",
            &json!({ "name": "b", "uid": "dup", "type": "github" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    server.stop().await;
}
