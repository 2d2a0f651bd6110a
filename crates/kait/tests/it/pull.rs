//! The pull API: polling endpoints read instead of called.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestServer;

async fn polling_endpoint(server: &TestServer, app: &str, filters: Value) -> String {
    let mut body = json!({ "kind": "polling" });
    body.as_object_mut()
        .unwrap()
        .extend(filters.as_object().unwrap().clone());
    let endpoint = server.create_endpoint(app, body).await;
    assert_eq!(endpoint["kind"], "polling");
    endpoint["id"].as_str().unwrap().to_owned()
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_poller_reads_a_polling_endpoint() {
    let server = TestServer::start().await;
    let app = server.create_app("pull").await;
    let sink = polling_endpoint(&server, &app, json!({ "eventTypes": ["wanted"] })).await;
    let first = server.send(&app, "wanted", json!({ "n": 1 })).await;
    server.send(&app, "unwanted", json!({ "n": 2 })).await;
    let second = server.send(&app, "wanted", json!({ "n": 3 })).await;

    let svix = server.svix();
    let page = svix
        .message()
        .poller()
        .poll(app.clone(), sink.clone(), None)
        .await
        .unwrap();
    let polled: Vec<_> = page.data.iter().map(|message| message.id.clone()).collect();
    assert_eq!(
        polled,
        vec![first, second],
        "its filters apply, oldest first"
    );
    assert_eq!(page.data[0].payload, json!({ "n": 1 }));
    assert!(page.done);
    let next = svix
        .message()
        .poller()
        .poll(
            app.clone(),
            sink.clone(),
            Some(svix::api::MessagePollerPollOptions {
                iterator: Some(page.iterator.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert!(next.data.is_empty());
    assert_eq!(
        next.iterator, page.iterator,
        "an empty poll keeps the position"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_the_iterator_sees_every_message_once_in_commit_order() {
    let server = TestServer::start().await;
    let app = server.create_app("writers").await;
    let sink = polling_endpoint(&server, &app, json!({})).await;
    const WRITERS: usize = 8;
    const EACH: usize = 60;
    let url = format!("{}/api/v1/app/{app}/msg", server.base_url);
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (http, url) = (server.http.clone(), url.clone());
        writers.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for index in 0..EACH {
                let body = json!({ "eventType": "w", "payload": { "writer": writer, "i": index } });
                let response = http
                    .post(&url)
                    .bearer_auth(crate::support::ADMIN_TOKEN)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                let message: Value =
                    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
                sent.push(message["id"].as_str().unwrap().to_owned());
            }
            sent
        }));
    }
    // Poll while the writers write.
    let mut seen = Vec::new();
    let mut iterator = "0".to_owned();
    let mut positions = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < WRITERS * EACH {
        assert!(
            tokio::time::Instant::now() < deadline,
            "saw only {}",
            seen.len()
        );
        let (status, page) = server
            .get(&format!(
                "/api/v1/app/{app}/poller/{sink}?limit=37&iterator={iterator}&timeout=1s"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(ids(&page));
        iterator = page["iterator"].as_str().unwrap().to_owned();
        positions.push(iterator.parse::<i64>().unwrap());
    }
    let mut acknowledged = HashSet::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    let distinct: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(distinct.len(), seen.len(), "no message seen twice");
    assert_eq!(distinct, acknowledged, "every message seen");
    assert!(
        positions.windows(2).all(|pair| pair[0] <= pair[1]),
        "positions only grow"
    );
    // In commit order: each writer's messages appear in the order it wrote them.
    let (_, all) = server
        .get(&format!("/api/v1/app/{app}/poller/{sink}?limit=250"))
        .await;
    let mut last_index = [-1i64; WRITERS];
    let mut pages = vec![all];
    while !pages.last().unwrap()["done"].as_bool().unwrap() {
        let iterator = pages.last().unwrap()["iterator"]
            .as_str()
            .unwrap()
            .to_owned();
        pages.push(
            server
                .get(&format!(
                    "/api/v1/app/{app}/poller/{sink}?limit=250&iterator={iterator}"
                ))
                .await
                .1,
        );
    }
    for message in pages
        .iter()
        .flat_map(|page| page["data"].as_array().unwrap().clone())
    {
        let writer = message["payload"]["writer"].as_u64().unwrap() as usize;
        let index = message["payload"]["i"].as_i64().unwrap();
        assert!(index > last_index[writer], "writer {writer} out of order");
        last_index[writer] = index;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_waits_for_the_next_message() {
    let server = TestServer::start().await;
    let app = server.create_app("long-poll").await;
    let sink = polling_endpoint(&server, &app, json!({})).await;
    let path = format!("/api/v1/app/{app}/poller/{sink}?timeout=10s");
    let poll = server.get(&path);
    let send = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.send(&app, "late", json!({ "late": true })).await
    };
    let ((status, page), msg_id) = tokio::join!(poll, send);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ids(&page),
        vec![msg_id],
        "the poll returned the message sent while it waited"
    );

    let (status, body) = server
        .get(&format!("/api/v1/app/{app}/poller/{sink}?timeout=5m"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = server
        .get(&format!("/api/v1/app/{app}/poller/{sink}?iterator=nope"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let webhook = server
        .create_endpoint(&app, json!({ "url": "https://example.com/h" }))
        .await;
    let (status, _) = server
        .get(&format!(
            "/api/v1/app/{app}/poller/{}",
            webhook["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a webhook endpoint is not read"
    );
    let (status, body) = server
        .post(
            &format!("/api/v1/app/{app}/endpoint"),
            r#"{"kind": "polling", "url": "https://example.com"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_keep_their_position_and_can_seek() {
    let server = TestServer::start().await;
    let app = server.create_app("consumers").await;
    let sink = polling_endpoint(&server, &app, json!({})).await;
    let mut sent = Vec::new();
    for index in 0..5 {
        sent.push(server.send(&app, "e", json!({ "i": index })).await);
    }
    let consumer = format!("/api/v1/app/{app}/poller/{sink}/consumer/gateway-1");
    let (_, first) = server.get(&format!("{consumer}?limit=3")).await;
    assert_eq!(ids(&first), sent[..3]);
    let (_, second) = server.get(&format!("{consumer}?limit=3")).await;
    assert_eq!(
        ids(&second),
        sent[3..],
        "the server remembered where it stopped"
    );
    let (_, other) = server
        .get(&format!(
            "/api/v1/app/{app}/poller/{sink}/consumer/gateway-2"
        ))
        .await;
    assert_eq!(ids(&other), sent, "consumers are independent");

    let (status, seek) = server
        .post(
            &format!("{consumer}/seek"),
            r#"{"after": "2000-01-01T00:00:00Z"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{seek}");
    let (_, replay) = server.get(&consumer).await;
    assert_eq!(ids(&replay), sent, "seeking to the past replays");
    let (status, _) = server
        .get(&format!(
            "/api/v1/app/{app}/poller/{sink}/consumer/bad%20id"
        ))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    server.stop().await;
}

/// Reads `count` server-sent events (id and data) from a streaming response.
async fn read_events(response: &mut reqwest::Response, count: usize) -> Vec<(String, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(|value| value.trim_start().to_owned())
            };
            if let (Some(id), Some(data)) = (field("id:"), field("data:")) {
                events.push((id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_resume_after_a_reconnect() {
    let server = TestServer::start().await;
    let app = server.create_app("sse").await;
    let sink = polling_endpoint(&server, &app, json!({})).await;
    let url = format!("{}/api/v1/app/{app}/poller/{sink}/stream", server.base_url);
    let connect = |last_event_id: Option<String>| {
        let mut request = server
            .http
            .get(&url)
            .bearer_auth(crate::support::ADMIN_TOKEN);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        request.send()
    };
    let mut stream = connect(None).await.unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut sent = Vec::new();
    for index in 0..3 {
        sent.push(server.send(&app, "live", json!({ "i": index })).await);
    }
    let events = read_events(&mut stream, 3).await;
    let received: Vec<_> = events
        .iter()
        .map(|(_, data)| data["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(received, sent);
    let last_id = events[2].0.clone();
    drop(stream);

    // Missed while disconnected, then picked up from Last-Event-ID.
    for index in 3..5 {
        sent.push(server.send(&app, "live", json!({ "i": index })).await);
    }
    let mut resumed = connect(Some(last_id)).await.unwrap();
    let events = read_events(&mut resumed, 2).await;
    let received: Vec<_> = events
        .iter()
        .map(|(_, data)| data["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(received, sent[3..], "exactly the missed ones, in order");
    // Shutting down ends open streams instead of waiting for them.
    server.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = resumed.chunk().await {}
    })
    .await;
    assert!(end.is_ok(), "the stream ended at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_scoped_tokens_reach_only_their_own_application() {
    use reqwest::Method;
    let server = TestServer::start().await;
    let (_, mine) = server
        .post("/api/v1/app", r#"{"name": "mine", "uid": "tenant-a"}"#)
        .await;
    let mine = mine["id"].as_str().unwrap().to_owned();
    let other = server.create_app("other").await;
    let sink = polling_endpoint(&server, &mine, json!({})).await;
    let msg_id = server.send(&mine, "e", json!({ "for": "a" })).await;

    let svix = server.svix();
    let access = svix
        .authentication()
        .app_portal_access(mine.clone(), svix::models::AppPortalAccessIn::new(), None)
        .await
        .unwrap();
    let token = access.token.clone();
    assert!(token.starts_with("appsk_"));
    let as_app = |method: Method, path: String| {
        let server = &server;
        let token = token.clone();
        async move {
            server
                .request_with(method, &path, Some("{}"), Some(&token), &[])
                .await
        }
    };
    let (status, page) = as_app(Method::GET, format!("/api/v1/app/{mine}/poller/{sink}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), vec![msg_id]);
    let (status, _) = as_app(Method::GET, "/api/v1/app/tenant-a/msg".into()).await;
    assert_eq!(status, StatusCode::OK, "by uid too");
    let (status, _) = as_app(
        Method::POST,
        format!("/api/v1/app/{mine}/poller/{sink}/consumer/c1/seek"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "seek is allowed (and {{}} lacks `after`)"
    );

    for (method, path) in [
        (Method::GET, format!("/api/v1/app/{other}/msg")),
        (Method::GET, "/api/v1/app".to_owned()),
        (Method::POST, format!("/api/v1/app/{mine}/msg")),
        (Method::DELETE, format!("/api/v1/app/{mine}")),
        (Method::POST, "/api/v1/event-type".to_owned()),
    ] {
        let (status, body) = as_app(method.clone(), path.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert_eq!(body["code"], "forbidden");
    }
    let (status, _) = server
        .request_with(
            Method::GET,
            &format!("/api/v1/app/{mine}/msg"),
            None,
            Some("appsk_forged"),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, still) = server.get(&format!("/api/v1/app/{mine}")).await;
    assert_eq!(
        still["id"],
        mine.as_str(),
        "the app survived the forbidden DELETE"
    );
    server.stop().await;
}
