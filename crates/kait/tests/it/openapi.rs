//! `GET /api/v1/openapi.json`: an OpenAPI 3 document, and it matches the routes the server
//! really has: every documented operation is routed (it never reaches the "route not found"
//! fallback or a 405), and on every documented path the methods not documented answer 405.
//! Routes can only be added through documented handlers (`routes!` in kait-api), so together
//! this checks that the server has no route the document lacks, and the reverse.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::{ADMIN_TOKEN, TestServer};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// A concrete URL path for a templated one (`{app_id}` → a name that does not exist).
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed brace") + start;
        out.push_str(&format!("missing-{}", &rest[start + 1..end]));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_exactly_the_routes_the_server_has() {
    let server = TestServer::start().await;
    let response = reqwest::get(format!("{}/api/v1/openapi.json", server.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "served without a token");
    let document: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        document["openapi"]
    );
    assert_eq!(document["info"]["title"], "Kait");
    assert!(document["components"]["schemas"]["EndpointIn"].is_object());
    let paths = document["paths"].as_object().expect("paths");

    let mut operation_ids = std::collections::HashSet::new();
    let mut operations = 0;
    for (path, item) in paths {
        let url = format!("{}{}", server.base_url, concrete(path));
        for method in METHODS {
            let documented = item.get(method).is_some();
            let mut request = server
                .http
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    &url,
                )
                .bearer_auth(ADMIN_TOKEN);
            if method != "get" && method != "delete" {
                request = request
                    .header("content-type", "application/json")
                    .body("{}");
            }
            if path.ends_with("/stream") {
                request = request.timeout(std::time::Duration::from_secs(2));
            }
            let Ok(response) = request.send().await else {
                assert!(documented, "{method} {path}: no answer");
                continue;
            };
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            if documented {
                operations += 1;
                assert_ne!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is documented but not routed"
                );
                assert!(
                    !body.contains("route not found"),
                    "{method} {path} is documented but fell through to the fallback"
                );
                let operation = &item[method];
                let id = operation["operationId"].as_str().unwrap_or_default();
                assert!(
                    operation_ids.insert(id.to_owned()),
                    "operationId {id:?} twice"
                );
                assert!(operation["summary"].is_string(), "{method} {path}: summary");
                assert!(
                    operation["responses"].is_object(),
                    "{method} {path}: responses"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} answers ({status}: {body}) but is not documented"
                );
            }
        }
    }
    assert!(operations >= 44, "only {operations} operations documented");
    for (path, method) in [
        ("/api/v1/app/{app_id}/msg", "post"),
        (
            "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret/rotate",
            "post",
        ),
        (
            "/api/v1/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}/seek",
            "post",
        ),
        ("/metrics", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    // A path the document does not have reaches the fallback.
    let (status, body) = server.get("/api/v1/app/x/not-a-route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "route not found");
    server.stop().await;
}
