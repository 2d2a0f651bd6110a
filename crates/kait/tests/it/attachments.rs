//! Attachments (issue 15, part 2): a clip uploaded once, referenced by a message, fetched by
//! each receiver through a link signed for its endpoint, with Range; what the server refuses.
//! On PostgreSQL the servers share a blob directory (`--blob-url file://…`).

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::process::KaitProcess;
use crate::support::{ADMIN_TOKEN, Receiver, Storage, TestServer, assert_signed};

/// `len` bytes that start like an MP4 file (`ftyp isom`) and then never repeat a pattern a
/// misplaced range could pass with.
pub fn clip(len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    data.extend_from_slice(&[
        0, 0, 0, 0x20, b'f', b't', b'y', b'p', b'i', b's', b'o', b'm', 0, 0, 2, 0, b'i', b's',
        b'o', b'm', b'i', b's', b'o', b'2', b'a', b'v', b'c', b'1', b'm', b'p', b'4', b'1',
    ]);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// A tiny JPEG's first bytes (enough for its signature).
pub const SNAPSHOT: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 0xFF,
    0xD9,
];

/// `POST …/attachment` with the body, its content type and an optional query.
pub async fn upload(
    base: &str,
    app: &str,
    content_type: Option<&str>,
    query: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/api/v1/app/{app}/attachment{query}"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.expect("upload reaches the server");
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// GETs a link with optional headers: status, headers, body.
pub async fn fetch(
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the link reaches the server");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

async fn api(base: &str, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let response = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

/// The checks a receiver of a clip makes: first, middle and last bytes by Range, the whole by
/// SHA-256, and what the headers say.
pub async fn fetch_and_check(url: &str, data: &[u8], filename: &str) {
    let len = data.len();
    let (status, headers, first) = fetch(url, &[("range", "bytes=0-1048575")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(first, data[..1_048_576]);
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes 0-1048575/{len}")
    );
    assert_eq!(header(&headers, "accept-ranges"), "bytes");
    assert_eq!(header(&headers, "content-type"), "video/mp4");
    assert_eq!(header(&headers, "content-length"), "1048576");
    assert!(
        header(&headers, "content-disposition").contains(&format!("filename=\"{filename}\"")),
        "{headers:?}"
    );
    let sha256 = hex::encode(Sha256::digest(data));
    assert_eq!(header(&headers, "etag"), format!("\"{sha256}\""));
    let middle = len / 2;
    let (status, _, bytes) = fetch(
        url,
        &[("range", &format!("bytes={middle}-{}", middle + 99_999))],
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(bytes, data[middle..middle + 100_000]);
    let (status, headers, last) = fetch(url, &[("range", "bytes=-1000")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(last, data[len - 1000..]);
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes {}-{}/{len}", len - 1000, len - 1)
    );
    let (status, _, whole) = fetch(url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hex::encode(Sha256::digest(&whole)), sha256);
    // Past the end; and a client that has it already.
    let (status, headers, _) = fetch(url, &[("range", &format!("bytes={len}-"))]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&headers, "content-range"), format!("bytes */{len}"));
    let etag = format!("\"{sha256}\"");
    let (status, _, body) = fetch(url, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
}

/// Every way to alter a link is refused with 403.
pub async fn assert_tampered_links_refused(url: &str) {
    let (path, query) = url.split_once('?').unwrap();
    let flipped = {
        let mut chars: Vec<char> = query.chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let later = {
        let (before, rest) = query.split_once("exp=").unwrap();
        let (exp, after) = rest.split_once('&').unwrap();
        let exp: i64 = exp.parse().unwrap();
        format!("{before}exp={}&{after}", exp + 3600)
    };
    let other_attachment = format!(
        "{}/att_{}?{query}",
        path.rsplit_once('/').unwrap().0,
        "2".repeat(27)
    );
    for forged in [
        format!("{path}?{flipped}"),
        format!("{path}?{later}"),
        other_attachment,
        path.to_owned(),
        format!("{path}?{query}&extra=1"),
    ] {
        let (status, _, body) = fetch(&forged, &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{forged}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "link_refused", "{forged}: {body}");
    }
}

#[tokio::test]
async fn a_clip_is_uploaded_referenced_and_fetched_by_range_with_flat_memory() {
    let storage = Storage::new().await;
    let server = KaitProcess::start(&storage);
    let base = &server.base_url;
    let receiver = Receiver::start().await;
    let xml_receiver = Receiver::start().await;
    let (_, app) = api(
        base,
        reqwest::Method::POST,
        "/api/v1/app",
        json!({ "name": "door" }),
    )
    .await;
    let app = app["id"].as_str().unwrap().to_owned();
    let (_, endpoint) = api(
        base,
        reqwest::Method::POST,
        &format!("/api/v1/app/{app}/endpoint"),
        json!({ "url": receiver.url }),
    )
    .await;
    let (status, xml_endpoint) = api(
        base,
        reqwest::Method::POST,
        &format!("/api/v1/app/{app}/endpoint"),
        json!({ "url": xml_receiver.url, "format": "xml", "inlineAttachmentMaxBytes": 4096 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{xml_endpoint}");
    assert_eq!(xml_endpoint["inlineAttachmentMaxBytes"], 4096);

    // 50 MB through the API, while the server's peak memory is watched.
    let data = clip(50 * 1024 * 1024);
    let (_, peak_before) = server.rss_mib();
    let (status, uploaded) = upload(
        base,
        &app,
        Some("video/mp4"),
        "?filename=front-door.mp4",
        data.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{uploaded}");
    let (_, peak_after) = server.rss_mib();
    assert!(
        peak_after - peak_before < 24.0,
        "a 50 MB upload raised the server's peak RSS from {peak_before:.1} to {peak_after:.1} MiB"
    );
    let sha256 = hex::encode(Sha256::digest(&data));
    assert_eq!(uploaded["size"], data.len());
    assert_eq!(uploaded["sha256"], sha256);
    assert_eq!(uploaded["contentType"], "video/mp4");
    assert_eq!(uploaded["filename"], "front-door.mp4");
    let clip_id = uploaded["id"].as_str().unwrap().to_owned();
    assert!(clip_id.starts_with("att_"));
    let (status, snapshot) = upload(base, &app, Some("image/jpeg"), "", SNAPSHOT.to_vec()).await;
    assert_eq!(status, StatusCode::CREATED, "{snapshot}");
    let snapshot_id = snapshot["id"].as_str().unwrap().to_owned();
    let (status, record) = api(
        base,
        reqwest::Method::GET,
        &format!("/api/v1/app/{app}/attachment/{clip_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["sha256"], sha256);

    // A message references both; its listing shows them.
    let (status, message) = api(
        base,
        reqwest::Method::POST,
        &format!("/api/v1/app/{app}/msg"),
        json!({
            "eventType": "camera.motion",
            "payload": { "camera": "front-door", "score": 0.97 },
            "attachments": [clip_id, snapshot_id]
        }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{message}");
    assert_eq!(message["attachments"][0]["id"], clip_id.as_str());
    assert_eq!(
        message["payload"],
        json!({ "camera": "front-door", "score": 0.97 })
    );

    // The JSON endpoint: a signed webhook whose attachments carry links for it.
    let webhook = receiver
        .wait_for(1, Duration::from_secs(10))
        .await
        .remove(0);
    let (_, secret) = api(
        base,
        reqwest::Method::GET,
        &format!(
            "/api/v1/app/{app}/endpoint/{}/secret",
            endpoint["id"].as_str().unwrap()
        ),
        Value::Null,
    )
    .await;
    assert_signed(&webhook, secret["key"].as_str().unwrap());
    let body = webhook.json();
    assert_eq!(body["camera"], "front-door");
    let attachments = body["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 2);
    assert_eq!(attachments[0]["sha256"], sha256);
    assert_eq!(attachments[0]["size"], data.len());
    assert!(attachments[0].get("data").is_none());
    let url = attachments[0]["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{base}/media/{clip_id}?")),
        "{url}"
    );
    assert!(url.contains(&format!("ep={}", endpoint["id"].as_str().unwrap())));
    let expires: chrono::DateTime<chrono::Utc> = attachments[0]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let in_a_day = chrono::Utc::now() + chrono::Duration::hours(24);
    assert!((in_a_day - expires).num_seconds().abs() < 60, "{expires}");

    let (_, peak_before) = server.rss_mib();
    fetch_and_check(url, &data, "front-door.mp4").await;
    let (_, peak_after) = server.rss_mib();
    assert!(
        peak_after - peak_before < 24.0,
        "serving the clip raised the peak RSS from {peak_before:.1} to {peak_after:.1} MiB"
    );
    assert_tampered_links_refused(url).await;

    // The XML endpoint: the same attachments in the mapping, the snapshot inline.
    let xml = xml_receiver
        .wait_for(1, Duration::from_secs(10))
        .await
        .remove(0);
    let text = String::from_utf8(xml.body.to_vec()).unwrap();
    let document = roxmltree::Document::parse(&text).unwrap();
    let ids: Vec<&str> = document
        .descendants()
        .filter(|node| {
            node.has_tag_name("id")
                && node
                    .parent()
                    .is_some_and(|p| p.has_tag_name("item") || p.has_tag_name("attachments"))
        })
        .filter_map(|node| node.text())
        .collect();
    assert!(
        ids.contains(&clip_id.as_str()) && ids.contains(&snapshot_id.as_str()),
        "{text}"
    );
    use base64::Engine;
    let inline = base64::engine::general_purpose::STANDARD.encode(SNAPSHOT);
    assert!(
        document
            .descendants()
            .any(|node| node.has_tag_name("data") && node.text() == Some(inline.as_str())),
        "{text}"
    );
    let xml_url = document
        .descendants()
        .find(|node| node.has_tag_name("url"))
        .and_then(|node| node.text())
        .unwrap()
        .to_owned();
    assert!(xml_url.contains(&format!("ep={}", xml_endpoint["id"].as_str().unwrap())));
    let (status, _, _) = fetch(&xml_url, &[("range", "bytes=0-9")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    storage.remove().await;
}

#[tokio::test]
async fn each_attempt_signs_a_fresh_link_and_expired_links_are_refused() {
    // The first attempt fails; the retry, after the first link has expired, carries a new one.
    let server = TestServer::start_with(|config| {
        config.retry_schedule = kait_core::retry::RetrySchedule::parse("3s").unwrap();
    })
    .await;
    let receiver = Receiver::start_with(|_, n| {
        if n == 0 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    })
    .await;
    let app = server.create_app("doorbell").await;
    let endpoint = server
        .create_endpoint(
            &app,
            json!({ "url": receiver.url, "attachmentLinkTtlSeconds": 2 }),
        )
        .await;
    assert_eq!(endpoint["attachmentLinkTtlSeconds"], 2);
    let audio = b"RIFF\x24\0\0\0WAVEfmt ding-dong".to_vec();
    let (status, uploaded) =
        upload(&server.base_url, &app, Some("audio/wav"), "", audio.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{uploaded}");
    let (status, _) = server
        .post(
            &format!("/api/v1/app/{app}/msg"),
            &json!({ "eventType": "doorbell.rang", "payload": {}, "attachments": [uploaded["id"]] })
                .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let webhooks = receiver.wait_for(2, Duration::from_secs(15)).await;
    let link = |webhook: &crate::support::Received| {
        webhook.json()["attachments"][0]["url"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (first, retried) = (link(&webhooks[0]), link(&webhooks[1]));
    assert_ne!(first, retried, "the retry carries a link signed anew");
    let (status, _, body) = fetch(&retried, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, audio);
    // The first link has expired by now.
    let (status, _, body) = fetch(&first, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_polling_endpoint_reads_attachments_with_its_own_links() {
    let server = TestServer::start().await;
    let app = server.create_app("scanner").await;
    let poller = server
        .create_endpoint(&app, json!({ "kind": "polling" }))
        .await;
    let pdf = b"%PDF-1.7\n1 0 obj <<>> endobj\n%%EOF\n".to_vec();
    let (status, uploaded) = upload(
        &server.base_url,
        &app,
        Some("application/pdf"),
        "?filename=scan%201.pdf",
        pdf.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{uploaded}");
    server
        .post(
            &format!("/api/v1/app/{app}/msg"),
            &json!({ "eventType": "scan.done", "payload": {"pages": 1}, "attachments": [uploaded["id"]] })
                .to_string(),
        )
        .await;
    let poller_id = poller["id"].as_str().unwrap();
    let (status, page) = server
        .get(&format!("/api/v1/app/{app}/poller/{poller_id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let attachment = &page["data"][0]["attachments"][0];
    assert_eq!(attachment["filename"], "scan 1.pdf");
    let url = attachment["url"].as_str().unwrap();
    assert!(url.contains(&format!("ep={poller_id}")), "{url}");
    let (status, headers, body) = fetch(url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, pdf);
    assert_eq!(
        header(&headers, "content-disposition"),
        "inline; filename=\"scan 1.pdf\"; filename*=UTF-8''scan%201.pdf"
    );
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    server.stop().await;
}

#[tokio::test]
async fn bad_uploads_and_references_are_refused_with_their_reason() {
    let server = TestServer::start_with(|config| config.max_attachment_bytes = 4096).await;
    let base = server.base_url.clone();
    let app = server.create_app("cameras").await;
    let other = server.create_app("elsewhere").await;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    // Content type, query, body: the status and code answered.
    type Case<'a> = (Option<&'a str>, &'a str, Vec<u8>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            None,
            "",
            b"abc".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Some("image"),
            "",
            b"abc".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Some("image/jpeg"),
            "",
            png.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Some("image/png"),
            "",
            Vec::new(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
        (
            Some("text/plain"),
            "",
            vec![b'a'; 5000],
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Some("text/plain"),
            "?filename=../etc/passwd",
            b"a".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
        (
            Some("text/plain"),
            "?name=x",
            b"a".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
    ];
    for (content_type, query, body, status, code) in cases {
        let (got, answer) = upload(&base, &app, content_type, query, body).await;
        assert_eq!(got, status, "{content_type:?} {query}: {answer}");
        assert_eq!(answer["code"], code, "{answer}");
    }
    // The mismatch says what the bytes are.
    let (_, answer) = upload(&base, &app, Some("image/jpeg"), "", png.clone()).await;
    assert!(
        answer["detail"].as_str().unwrap().contains("image/png"),
        "{answer}"
    );
    // Nothing of the refused uploads is left in the blob store.
    let storage = server.storage();
    let blobs = match &storage.blobs_dir {
        Some(shared) => shared.path().to_owned(),
        None => storage.data_dir.path().join("blobs"),
    };
    let left = std::fs::read_dir(&blobs)
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "refused uploads left files in {}", blobs.display());

    let (_, mine) = upload(&base, &app, Some("image/png"), "", png.clone()).await;
    let (_, theirs) = upload(&base, &other, Some("image/png"), "", png).await;
    let msg = |extra: Value| {
        let mut body = json!({ "eventType": "camera.motion", "payload": { "a": 1 } });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body.to_string()
    };
    let refused = [
        (json!({ "attachments": [theirs["id"]] }), "attachments[0]"),
        (
            json!({ "attachments": [format!("att_{}", "1".repeat(27))] }),
            "attachments[0]",
        ),
        (json!({ "attachments": ["msg_123"] }), "attachments[0]"),
        (
            json!({ "attachments": [mine["id"], mine["id"]] }),
            "attachments[1]",
        ),
        (
            json!({ "attachments": vec![mine["id"].clone(); 17] }),
            "attachments",
        ),
        (
            json!({ "attachments": [mine["id"]], "payload": { "attachments": [] } }),
            "payload",
        ),
        (
            json!({
                "attachments": [mine["id"]],
                "payload": {},
                "transformationsParams": { "rawPayload": "x", "headers": { "content-type": "text/plain" } }
            }),
            "attachments",
        ),
    ];
    for (extra, field) in refused {
        let (status, answer) = server
            .post(&format!("/api/v1/app/{app}/msg"), &msg(extra.clone()))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{extra}: {answer}"
        );
        assert!(
            answer["detail"]
                .as_array()
                .unwrap()
                .iter()
                .any(|problem| problem["loc"][1] == field),
            "{extra}: {answer}"
        );
    }
    // Endpoint settings out of range.
    for setting in [
        json!({ "attachmentLinkTtlSeconds": 0 }),
        json!({ "attachmentLinkTtlSeconds": 604801 }),
        json!({ "inlineAttachmentMaxBytes": 2_000_000 }),
    ] {
        let mut body = json!({ "url": "http://127.0.0.1:9/hook" });
        body.as_object_mut()
            .unwrap()
            .extend(setting.as_object().unwrap().clone());
        let (status, answer) = server
            .post(&format!("/api/v1/app/{app}/endpoint"), &body.to_string())
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{setting}: {answer}"
        );
    }
    // Links that are not links.
    for path in ["/media/att_x", "/media/nothing?ep=a&exp=1&sig=b", "/media/"] {
        let (status, _, _) = fetch(&format!("{base}{path}"), &[]).await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{path}: {status}"
        );
    }
    // An Idempotency-Key names one request: the same message with other attachments is 422.
    let (_, second) = upload(&base, &app, Some("text/plain"), "", b"second".to_vec()).await;
    let keyed = |attachment: &Value| {
        let request = reqwest::Client::new()
            .post(format!("{base}/api/v1/app/{app}/msg"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .header("idempotency-key", "one-motion-event")
            .body(msg(json!({ "attachments": [attachment] })));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                serde_json::from_slice::<Value>(&response.bytes().await.unwrap()).unwrap(),
            )
        }
    };
    let (status, first) = keyed(&mine["id"]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, again) = keyed(&mine["id"]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        again["id"], first["id"],
        "a repeat answers with the first message"
    );
    let (status, other) = keyed(&second["id"]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{other}");
    assert_eq!(other["code"], "idempotency_key_reused");
    // XML input names them in an attribute.
    let xml = format!(
        r#"<message eventType="camera.motion" attachments="{}"><payload><camera>gate</camera></payload></message>"#,
        mine["id"].as_str().unwrap()
    );
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/app/{app}/msg"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/xml")
        .body(xml)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(accepted["attachments"][0]["id"], mine["id"]);
    // The server still works.
    let (status, _) = server
        .post(
            &format!("/api/v1/app/{app}/msg"),
            &msg(json!({ "attachments": [mine["id"]] })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    server.stop().await;
}

/// A moto S3 server on 127.0.0.1 (installed by `compat/s3/setup.sh`), killed when dropped.
struct S3Server {
    child: std::process::Child,
    url: String,
}

impl S3Server {
    async fn start(bucket: &str) -> Self {
        let dir = std::env::var("KAIT_MOTO_DIR").unwrap_or_else(|_| "/var/tmp/kait-moto".into());
        let binary = format!("{dir}/bin/moto_server");
        assert!(
            std::path::Path::new(&binary).exists(),
            "{binary} is missing: run `bash compat/s3/setup.sh` (CI does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for attempt in 0.. {
            // Moto takes unsigned requests: this makes the bucket.
            match client.put(format!("{}/{bucket}", server.url)).send().await {
                Ok(response) if response.status().is_success() => break,
                _ if attempt < 100 => tokio::time::sleep(Duration::from_millis(100)).await,
                other => panic!("moto did not come up: {other:?}"),
            }
        }
        server
    }

    /// The keys stored in `bucket` (its listing, as S3 XML).
    async fn keys(&self, bucket: &str) -> Vec<String> {
        let listing = reqwest::Client::new()
            .get(format!("{}/{bucket}?list-type=2", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let document = roxmltree::Document::parse(&listing).unwrap();
        document
            .descendants()
            .filter(|node| node.has_tag_name("Key"))
            .filter_map(|node| node.text().map(str::to_owned))
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
#[ignore = "needs moto's S3 server (compat/s3/setup.sh); CI runs it with --ignored"]
async fn the_s3_store_passes_the_same_checks() {
    let s3 = S3Server::start("kait-media").await;
    let storage = Storage::new().await;
    let env = [
        ("AWS_ACCESS_KEY_ID", "kait-test"),
        ("AWS_SECRET_ACCESS_KEY", "kait-test-secret"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", s3.url.as_str()),
    ];
    let server =
        KaitProcess::start_with_env(&storage, &["--blob-url", "s3://kait-media/clips"], &env);
    let base = &server.base_url;
    let receiver = Receiver::start().await;
    let (_, app) = api(
        base,
        reqwest::Method::POST,
        "/api/v1/app",
        json!({ "name": "door" }),
    )
    .await;
    let app = app["id"].as_str().unwrap().to_owned();
    api(
        base,
        reqwest::Method::POST,
        &format!("/api/v1/app/{app}/endpoint"),
        json!({ "url": receiver.url }),
    )
    .await;
    // Large enough for several multipart parts (5 MiB each).
    let data = clip(12 * 1024 * 1024 + 12_345);
    let (status, uploaded) = upload(
        base,
        &app,
        Some("video/mp4"),
        "?filename=front-door.mp4",
        data.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{uploaded}");
    let clip_id = uploaded["id"].as_str().unwrap().to_owned();
    assert_eq!(
        s3.keys("kait-media").await,
        vec![format!("clips/{clip_id}")],
        "the blob is in the bucket, under the prefix"
    );
    // A refused upload leaves nothing in the bucket.
    let (status, _) = upload(base, &app, Some("image/jpeg"), "", data[..20_000].to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(s3.keys("kait-media").await.len(), 1);

    let (status, _) = api(
        base,
        reqwest::Method::POST,
        &format!("/api/v1/app/{app}/msg"),
        json!({ "eventType": "camera.motion", "payload": {}, "attachments": [clip_id] }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let webhook = receiver
        .wait_for(1, Duration::from_secs(10))
        .await
        .remove(0);
    let url = webhook.json()["attachments"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    fetch_and_check(&url, &data, "front-door.mp4").await;
    assert_tampered_links_refused(&url).await;
    drop(server);
    storage.remove().await;
}
