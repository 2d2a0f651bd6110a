//! Issue 13: requests received on a source's `ingestUrl` are verified by the provider's
//! scheme, kept durably, and forwarded to the source's endpoints re-signed by Kait. Provider
//! signatures here are made with `hmac`/`sha2` directly (GitHub, Stripe, Slack, Shopify) and
//! with the `standardwebhooks` crate, not with Kait's verifier code; the forwarded webhooks
//! are checked with the independent `standardwebhooks` and `svix` verifiers.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::receiver::{Received, Receiver};
use crate::support::{TestServer, assert_signed, assert_signed_bytes, hmac_sha256};

const WAIT: Duration = Duration::from_secs(20);

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A source and one endpoint of it pointing at `receiver`: its receiving URL and the
/// endpoint's signing secret.
struct Wired {
    id: String,
    ingest_url: String,
    secret: String,
}

async fn wire(server: &TestServer, kind: &str, config: Value, receiver: &Receiver) -> Wired {
    let (status, source) = server
        .post(
            "/ingest/api/v1/source",
            &json!({ "name": kind, "type": kind, "config": config }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{source}");
    let id = source["id"].as_str().unwrap().to_owned();
    let (status, endpoint) = server
        .post(
            &format!("/ingest/api/v1/source/{id}/endpoint"),
            &json!({ "url": receiver.url, "description": "my service" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let (status, secret) = server
        .get(&format!(
            "/ingest/api/v1/source/{id}/endpoint/{endpoint_id}/secret"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{secret}");
    Wired {
        id,
        ingest_url: source["ingestUrl"].as_str().unwrap().to_owned(),
        secret: secret["key"].as_str().unwrap().to_owned(),
    }
}

/// POSTs `body` to a receiving URL, as a provider would (no Kait token).
async fn deliver(url: &str, headers: &[(&str, String)], body: &[u8]) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().post(url).body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn github_headers(secret: &str, body: &[u8], delivery: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("x-github-event", "push".into()),
        ("x-github-delivery", delivery.into()),
        (
            "x-hub-signature-256",
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
            ),
        ),
    ]
}

fn stripe_headers(secret: &str, body: &[u8], at: i64) -> Vec<(&'static str, String)> {
    let signature = hex::encode(hmac_sha256(
        secret.as_bytes(),
        &[at.to_string().as_bytes(), b".", body],
    ));
    vec![
        ("content-type", "application/json; charset=utf-8".into()),
        ("stripe-signature", format!("t={at},v1={signature}")),
    ]
}

fn slack_headers(secret: &str, body: &[u8], content_type: &str) -> Vec<(&'static str, String)> {
    let at = now().to_string();
    let signature = hex::encode(hmac_sha256(
        secret.as_bytes(),
        &[b"v0:", at.as_bytes(), b":", body],
    ));
    vec![
        ("content-type", content_type.into()),
        ("x-slack-request-timestamp", at),
        ("x-slack-signature", format!("v0={signature}")),
    ]
}

fn standard_headers(secret: &str, id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let at = now();
    let signature = standardwebhooks::Webhook::new(secret)
        .unwrap()
        .sign(id, at, body)
        .unwrap();
    vec![
        ("content-type", "application/json".into()),
        ("webhook-id", id.into()),
        ("webhook-timestamp", at.to_string()),
        ("webhook-signature", signature),
    ]
}

/// Sends `chunks` KiB in chunked encoding (no declared length) and returns the status
/// line's start; the server answers before the sender has finished.
async fn chunked_status(url: &str, chunks: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = reqwest::Url::parse(url).unwrap();
    let address = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: kait\r\nauthorization: Bearer let-me-in\r\n\
         transfer-encoding: chunked\r\n\r\n",
        url.path()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("400\r\n{}\r\n", "b".repeat(1024));
    for _ in 0..chunks {
        // The server may close once it has answered: later writes may fail.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 12];
    stream.read_exact(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The forwarded webhook whose body is `body`.
fn forwarded<'a>(received: &'a [Received], body: &[u8]) -> &'a Received {
    received
        .iter()
        .find(|webhook| webhook.body.as_ref() == body)
        .unwrap_or_else(|| panic!("not forwarded: {}", String::from_utf8_lossy(body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_signed_requests_are_forwarded_re_signed_byte_for_byte() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let github_secret = "It's a Secret to Everybody";
    let stripe_secret = "whsec_stripe_test_secret_value";
    let slack_secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let standard_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let github = wire(
        &server,
        "github",
        json!({ "secret": github_secret }),
        &receiver,
    )
    .await;
    let stripe = wire(
        &server,
        "stripe",
        json!({ "secret": stripe_secret }),
        &receiver,
    )
    .await;
    let slack = wire(
        &server,
        "slack",
        json!({ "secret": slack_secret }),
        &receiver,
    )
    .await;
    let standard = wire(
        &server,
        "standard-webhooks",
        json!({ "secret": standard_secret }),
        &receiver,
    )
    .await;

    // Spacing and key order as the provider sent them: forwarded unchanged.
    let github_body = br#"{"ref": "refs/heads/main",  "zen":"Keep it logically awesome."}"#;
    let (status, ack) = deliver(
        &github.ingest_url,
        &github_headers(github_secret, github_body, "72d3162e-cc78-11e3"),
        github_body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["duplicate"], json!(false));
    assert!(ack["id"].as_str().unwrap().starts_with("rcv_"));

    let stripe_body = br#"{"id":"evt_1","type":"invoice.paid","data":{"object":{}}}"#;
    let (status, ack) = deliver(
        &stripe.ingest_url,
        &stripe_headers(stripe_secret, stripe_body, now()),
        stripe_body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ack}");

    // Slack's handshake is answered, not forwarded; its events are.
    let challenge = br#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let (status, answer) = deliver(
        &slack.ingest_url,
        &slack_headers(slack_secret, challenge, "application/json"),
        challenge,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["challenge"],
        json!("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    );
    let slack_body =
        br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"app_mention","text":"hi"}}"#;
    let (status, ack) = deliver(
        &slack.ingest_url,
        &slack_headers(slack_secret, slack_body, "application/json"),
        slack_body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ack}");

    let standard_body = br#"{"type":"user.created","data":{"id":7}}"#;
    let (status, ack) = deliver(
        &standard.ingest_url,
        &standard_headers(standard_secret, "msg_provider_1", standard_body),
        standard_body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ack}");

    let received = receiver.wait_for(4, WAIT).await;
    for (wired, body) in [
        (&github, &github_body[..]),
        (&stripe, &stripe_body[..]),
        (&slack, &slack_body[..]),
        (&standard, &standard_body[..]),
    ] {
        let webhook = forwarded(&received, body);
        assert_signed(webhook, &wired.secret);
        assert_eq!(webhook.header("content-type"), "application/json");
    }
    assert_eq!(received.len(), 4, "the handshake is not forwarded");

    // Each became a message of the source's application, under the provider's event name.
    let (_, messages) = server
        .get(&format!("/api/v1/app/kait-source-{}/msg", github.id))
        .await;
    assert_eq!(messages["data"][0]["eventType"], json!("push"));
    let (_, messages) = server
        .get(&format!("/api/v1/app/kait-source-{}/msg", stripe.id))
        .await;
    assert_eq!(messages["data"][0]["eventType"], json!("invoice.paid"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_replayed_and_repeated_requests_are_never_forwarded() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let secret = "github-secret";
    let github = wire(&server, "github", json!({ "secret": secret }), &receiver).await;
    let stripe_secret = "whsec_stripe";
    let stripe = wire(
        &server,
        "stripe",
        json!({ "secret": stripe_secret }),
        &receiver,
    )
    .await;
    let standard_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let standard = wire(
        &server,
        "standard-webhooks",
        json!({ "secret": standard_secret }),
        &receiver,
    )
    .await;

    let body = br#"{"action":"opened"}"#;
    // Signed with another secret.
    let (status, refused) = deliver(
        &github.ingest_url,
        &github_headers("not-the-secret", body, "d-1"),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    assert_eq!(refused["code"], json!("verification_failed"));
    assert!(!refused["detail"].as_str().unwrap().is_empty());
    // A captured Stripe request replayed ten minutes later.
    let stripe_body = br#"{"id":"evt_old","type":"charge.succeeded"}"#;
    let (status, _) = deliver(
        &stripe.ingest_url,
        &stripe_headers(stripe_secret, stripe_body, now() - 600),
        stripe_body,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An empty signature (`v1,` with nothing after it).
    let mut empty = standard_headers(standard_secret, "msg_x", body);
    empty[3].1 = "v1,".into();
    let (status, _) = deliver(&standard.ingest_url, &empty, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A wrong token does not even say whether the source exists.
    let wrong = format!("{}x", github.ingest_url);
    let (status, _) = deliver(&wrong, &github_headers(secret, body, "d-2"), body).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The same GitHub delivery twice: accepted twice, forwarded once.
    let headers = github_headers(secret, body, "d-3");
    let (status, first) = deliver(&github.ingest_url, &headers, body).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, again) = deliver(&github.ingest_url, &headers, body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["duplicate"], json!(true));
    assert_eq!(again["msgId"], first["msgId"]);
    // A last good request: once it has arrived, anything forwarded before it has too.
    let last = br#"{"action":"closed"}"#;
    let (status, _) = deliver(
        &github.ingest_url,
        &github_headers(secret, last, "d-4"),
        last,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let received = receiver.wait_for(2, WAIT).await;
    forwarded(&received, last);
    let bodies: Vec<&[u8]> = received
        .iter()
        .map(|webhook| webhook.body.as_ref())
        .collect();
    assert_eq!(
        bodies
            .iter()
            .filter(|forwarded| **forwarded == body)
            .count(),
        1,
        "a repeated delivery is forwarded once"
    );
    assert!(
        !bodies.contains(&&stripe_body[..]),
        "a replay is never forwarded"
    );

    // The log has every request, newest first, with what became of it.
    let (status, log) = server
        .get(&format!("/ingest/api/v1/source/{}/received", github.id))
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let outcomes: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["outcome"].as_str().unwrap())
        .collect();
    let mut sorted = outcomes.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["accepted", "accepted", "duplicate", "refused"],
        "{log}"
    );
    let refused_entry = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["outcome"] == json!("refused"))
        .unwrap();
    assert!(refused_entry["msgId"].is_null());
    assert!(
        refused_entry["reason"]
            .as_str()
            .unwrap()
            .contains("X-Hub-Signature-256"),
        "{refused_entry}"
    );
    let (_, stripe_log) = server
        .get(&format!("/ingest/api/v1/source/{}/received", stripe.id))
        .await;
    assert_eq!(stripe_log["data"][0]["outcome"], json!("refused"));

    // Replaying the first accepted request forwards it again; a refused one cannot be.
    let accepted = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["outcome"] == json!("accepted") && entry["eventId"] == json!("d-3"))
        .unwrap();
    let (status, task) = server
        .post(
            &format!(
                "/ingest/api/v1/source/{}/received/{}/replay",
                github.id,
                accepted["id"].as_str().unwrap()
            ),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    assert_eq!(task["count"], json!(1));
    let received = receiver.wait_for(3, WAIT).await;
    let replayed = received
        .iter()
        .filter(|webhook| webhook.body.as_ref() == body)
        .count();
    assert_eq!(replayed, 2);
    let (status, _) = server
        .post(
            &format!(
                "/ingest/api/v1/source/{}/received/{}/replay",
                github.id,
                refused_entry["id"].as_str().unwrap()
            ),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_body_is_forwarded_as_received_with_path_and_query() {
    let server = TestServer::start_with(|config| config.limits.max_body_bytes = 64 * 1024).await;
    let receiver = Receiver::start().await;
    let slack_secret = "slack-signing-secret";
    let slack = wire(
        &server,
        "slack",
        json!({ "secret": slack_secret }),
        &receiver,
    )
    .await;
    let generic = wire(
        &server,
        "generic-webhook",
        json!({ "bearerToken": "let-me-in" }),
        &receiver,
    )
    .await;

    // A Slack slash command: a form, kept as it came.
    let form = b"command=%2Fdeploy&text=api+v2&user_id=U1";
    let (status, ack) = deliver(
        &slack.ingest_url,
        &slack_headers(slack_secret, form, "application/x-www-form-urlencoded"),
        form,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ack}");

    let bearer = ("authorization", "Bearer let-me-in".to_owned());
    // Bytes that are not text, under a path and query below the token.
    let binary: &[u8] = &[0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, b'J', b'F', b'I', b'F'];
    let (status, ack) = deliver(
        &format!("{}/cameras/7/snapshot?quality=high&n=2", generic.ingest_url),
        &[bearer.clone(), ("content-type", "image/jpeg".into())],
        binary,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    let xml = b"<?xml version=\"1.0\"?><Response><Sid>SM1</Sid></Response>";
    let (status, _) = deliver(
        &generic.ingest_url,
        &[bearer.clone(), ("content-type", "text/xml".into())],
        xml,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, refused) = deliver(
        &generic.ingest_url,
        &[("authorization", "Bearer guess".into())],
        b"{}",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");

    // Too large: refused by its declared length, and without one while it is read.
    let large = vec![b'a'; 65 * 1024];
    let (status, too_large) =
        deliver(&generic.ingest_url, std::slice::from_ref(&bearer), &large).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{too_large}");
    assert_eq!(too_large["code"], json!("payload_too_large"));
    assert_eq!(
        chunked_status(&generic.ingest_url, 80).await,
        "HTTP/1.1 413",
        "a chunked body is cut off once past the limit"
    );

    let received = receiver.wait_for(3, WAIT).await;
    let webhook = forwarded(&received, form);
    assert_signed(webhook, &slack.secret);
    assert_eq!(
        webhook.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    let webhook = forwarded(&received, binary);
    // The verifier crates take text bodies only: this signature is checked by hand.
    assert_signed_bytes(webhook, &generic.secret);
    assert_eq!(webhook.header("content-type"), "image/jpeg");
    assert_eq!(
        webhook.header("svix-ingest-trailing-path-segments"),
        "cameras/7/snapshot"
    );
    assert_eq!(webhook.header("svix-ingest-query"), "quality=high&n=2");
    let webhook = forwarded(&received, xml);
    assert_eq!(webhook.header("content-type"), "text/xml");
    assert!(webhook.headers.get("svix-ingest-query").is_none());

    // Listings show each body's JSON reading (the form's fields, the XML's mapping).
    let (_, messages) = server
        .get(&format!("/api/v1/app/kait-source-{}/msg", slack.id))
        .await;
    assert_eq!(messages["data"][0]["payload"]["command"], json!("/deploy"));
    let (_, messages) = server
        .get(&format!("/api/v1/app/kait-source-{}/msg", generic.id))
        .await;
    let readings: Vec<&Value> = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| &message["payload"])
        .collect();
    assert!(
        readings.contains(&&json!({ "Response": { "Sid": "SM1" } })),
        "{messages}"
    );
    assert!(readings.contains(&&json!({})));
    server.stop().await;
}

/// The receiving path keeps sources in memory: a rotation and a deletion are seen by the next
/// request. After `token/rotate` both URLs work (the old one for 24 hours); after delete, 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_and_deleted_sources_are_seen_at_once() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let generic = wire(&server, "generic-webhook", json!({}), &receiver).await;
    let json_type = [("content-type", "application/json".to_owned())];
    let (status, _) = deliver(&generic.ingest_url, &json_type, b"{\"n\":1}").await;
    assert_eq!(status, StatusCode::OK);
    let (status, rotated) = server
        .post(
            &format!("/ingest/api/v1/source/{}/token/rotate", generic.id),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_url = rotated["ingestUrl"].as_str().unwrap();
    let (status, _) = deliver(new_url, &json_type, b"{\"n\":2}").await;
    assert_eq!(status, StatusCode::OK, "the new token works at once");
    let (status, _) = deliver(&generic.ingest_url, &json_type, b"{\"n\":3}").await;
    assert_eq!(status, StatusCode::OK, "the old one still works");
    receiver.wait_for(3, WAIT).await;

    let (status, _) = server
        .request(
            reqwest::Method::DELETE,
            &format!("/ingest/api/v1/source/{}", generic.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = deliver(new_url, &json_type, b"{\"n\":4}").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a deleted source receives nothing"
    );
    let (status, _) = server
        .get(&format!("/api/v1/app/kait-source-{}", generic.id))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "its application went with it"
    );
    server.stop().await;
}
