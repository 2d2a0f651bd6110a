//! Iterator pagination (`{data, iterator, prevIterator, done}`) and list filters.

use serde_json::{Value, json};

use crate::support::TestServer;

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Follows `iterator` until `done`, returning every id and each page's `done` flag.
async fn walk(server: &TestServer, path: &str) -> (Vec<String>, Vec<bool>) {
    let mut all = Vec::new();
    let mut done_flags = Vec::new();
    let mut iterator: Option<String> = None;
    loop {
        let separator = if path.contains('?') { '&' } else { '?' };
        let url = match &iterator {
            Some(iterator) => format!("{path}{separator}limit=3&iterator={iterator}"),
            None => format!("{path}{separator}limit=3"),
        };
        let (_, page) = server.get(&url).await;
        all.extend(ids(&page));
        let done = page["done"].as_bool().unwrap();
        done_flags.push(done);
        if done {
            return (all, done_flags);
        }
        iterator = Some(page["iterator"].as_str().unwrap().to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_page_in_id_order() {
    let server = TestServer::start().await;
    let mut created = Vec::new();
    for index in 0..7 {
        created.push(server.create_app(&format!("app {index}")).await);
    }
    created.sort();
    let (listed, done_flags) = walk(&server, "/api/v1/app").await;
    assert_eq!(listed, created);
    assert_eq!(done_flags, vec![false, false, true]);

    // prevIterator of the second page leads back to the first.
    let (_, first) = server.get("/api/v1/app?limit=3").await;
    let iterator = first["iterator"].as_str().unwrap();
    let (_, second) = server
        .get(&format!("/api/v1/app?limit=3&iterator={iterator}"))
        .await;
    let previous = second["prevIterator"].as_str().unwrap();
    let (_, back) = server
        .get(&format!("/api/v1/app?limit=3&iterator={previous}"))
        .await;
    assert_eq!(ids(&back), ids(&first));

    let (_, descending) = server.get("/api/v1/app?order=descending&limit=250").await;
    let mut reversed = created.clone();
    reversed.reverse();
    assert_eq!(ids(&descending), reversed);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_page_newest_first_and_filter() {
    let server = TestServer::start().await;
    let app = server.create_app("messages").await;
    let mut sent = Vec::new();
    for index in 0..7 {
        let event_type = if index % 2 == 0 {
            "even.number"
        } else {
            "odd.number"
        };
        let channels = if index < 3 {
            json!(["early"])
        } else {
            json!(["late"])
        };
        let body =
            json!({ "eventType": event_type, "payload": { "i": index }, "channels": channels });
        let (_, message) = server
            .post(&format!("/api/v1/app/{app}/msg"), &body.to_string())
            .await;
        sent.push(message["id"].as_str().unwrap().to_owned());
    }
    let (listed, done_flags) = walk(&server, &format!("/api/v1/app/{app}/msg")).await;
    let mut newest_first = sent.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    assert_eq!(done_flags, vec![false, false, true]);

    let (_, even) = server
        .get(&format!(
            "/api/v1/app/{app}/msg?event_types=even.number&limit=250"
        ))
        .await;
    assert_eq!(
        ids(&even),
        vec![
            sent[6].clone(),
            sent[4].clone(),
            sent[2].clone(),
            sent[0].clone()
        ]
    );
    let (_, both) = server
        .get(&format!(
            "/api/v1/app/{app}/msg?event_types=even.number,odd.number"
        ))
        .await;
    assert_eq!(ids(&both).len(), 7);
    let (_, early) = server
        .get(&format!("/api/v1/app/{app}/msg?channel=early"))
        .await;
    assert_eq!(
        ids(&early),
        vec![sent[2].clone(), sent[1].clone(), sent[0].clone()]
    );
    let (_, without_content) = server
        .get(&format!("/api/v1/app/{app}/msg?with_content=false&limit=1"))
        .await;
    assert_eq!(without_content["data"][0]["payload"], json!({}));
    server.stop().await;
}
