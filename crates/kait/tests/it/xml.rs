//! XML endpoints and XML input, checked with an XML parser independent of Kait's writer.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{ADMIN_TOKEN, Receiver, TestServer, assert_signed};

const WAIT: Duration = Duration::from_secs(10);
const J: &str = "urn:kait:json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_endpoints_receive_the_documented_mapping() {
    let server = TestServer::start().await;
    let json_receiver = Receiver::start().await;
    let xml_receiver = Receiver::start().await;
    let app = server.create_app("xml").await;
    server
        .create_endpoint(&app, json!({ "url": json_receiver.url }))
        .await;
    let endpoint = server
        .create_endpoint(&app, json!({ "url": xml_receiver.url, "format": "xml" }))
        .await;
    assert_eq!(endpoint["format"], "xml");
    let secret = server.secret(&app, endpoint["id"].as_str().unwrap()).await;
    let payload = json!({
        "camera": "gate & yard",
        "confidence": 0.93,
        "zones": ["north", "south"],
        "night": false,
        "operator": null,
        "2nd sensor": {"ok": true},
    });
    let msg_id = server.send(&app, "camera.motion", payload.clone()).await;

    let webhook = xml_receiver.wait_for(1, WAIT).await.remove(0);
    assert_eq!(
        webhook.header("content-type"),
        "application/xml; charset=utf-8"
    );
    assert_signed(&webhook, &secret);
    let text = std::str::from_utf8(&webhook.body).unwrap();
    let document = roxmltree::Document::parse(text).expect("well-formed XML");
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "webhook");
    assert_eq!(root.attribute("id"), Some(msg_id.as_str()));
    assert_eq!(root.attribute("type"), Some("camera.motion"));
    assert!(root.attribute("timestamp").unwrap().ends_with('Z'));
    let payload_node = root.first_element_child().unwrap();
    let child = |name: &str| {
        payload_node
            .children()
            .filter(|node| node.is_element() && node.tag_name().name() == name)
            .collect::<Vec<_>>()
    };
    assert_eq!(child("camera")[0].text(), Some("gate & yard"));
    assert_eq!(
        child("confidence")[0].attribute((J, "type")),
        Some("number")
    );
    assert_eq!(child("confidence")[0].text(), Some("0.93"));
    let zones: Vec<_> = child("zones")
        .iter()
        .map(|zone| zone.text().unwrap())
        .collect();
    assert_eq!(zones, ["north", "south"]);
    assert_eq!(child("night")[0].attribute((J, "type")), Some("boolean"));
    assert_eq!(child("operator")[0].attribute((J, "null")), Some("true"));
    let odd = &child("key")[0];
    assert_eq!(odd.attribute("name"), Some("2nd sensor"));
    // And Kait's own reader turns it back into the same JSON.
    let parsed = kait_core::xml::parse(text, 64).unwrap();
    assert_eq!(serde_json::Value::Object(parsed.payload), payload);
    assert_eq!(json_receiver.wait_for(1, WAIT).await[0].json(), payload);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_can_be_published_as_xml() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app = server.create_app("xml-in").await;
    server
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    let post_xml = |body: &'static str| {
        let server = &server;
        let app = app.clone();
        async move {
            let response = server
                .http
                .post(format!("{}/api/v1/app/{app}/msg", server.base_url))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/xml; charset=utf-8")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: serde_json::Value =
                serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            (status, body)
        }
    };
    let (status, message) = post_xml(
        r#"<?xml version="1.0"?>
<message xmlns:j="urn:kait:json" eventType="sensor.reading" eventId="reading-1" channels="kitchen,ground">
  <payload><temp j:type="number">21.5</temp><room>kitchen</room><alarms j:type="array"/></payload>
</message>"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{message}");
    assert_eq!(message["eventType"], "sensor.reading");
    assert_eq!(message["eventId"], "reading-1");
    assert_eq!(message["channels"], json!(["ground", "kitchen"]));
    let expected = json!({ "temp": 21.5, "room": "kitchen", "alarms": [] });
    assert_eq!(message["payload"], expected);
    assert_eq!(receiver.wait_for(1, WAIT).await[0].json(), expected);

    let (status, error) =
        post_xml("<message eventType=\"a.b\">\n<payload><open></payload></message>").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["code"], "invalid_xml");
    assert!(
        error["detail"].as_str().unwrap().contains("line 2, column"),
        "{error}"
    );
    let (status, error) = post_xml("<message><payload/></message>").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["detail"][0]["loc"], json!(["body", "eventType"]));

    let (status, error) = server
        .post(
            &format!("/api/v1/app/{app}/endpoint"),
            &json!({ "url": receiver.url, "format": "yaml" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    server.stop().await;
}
