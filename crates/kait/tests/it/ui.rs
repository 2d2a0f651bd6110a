//! The consumer portal (`/portal`) and the operator dashboard (`/ui`): their pages and
//! headers, the dashboard's session cookie and CSRF rule, and the journeys a person makes,
//! driven in a real Chromium (`support::browser`), with screenshots kept as artefacts.

use std::time::Duration;

use fantoccini::Locator;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use svix::models::{AppPortalAccessIn, EventTypeIn};

use crate::support::browser::Browser;
use crate::support::{ADMIN_TOKEN, Receiver, TestServer};

const WAIT: Duration = Duration::from_secs(15);
/// A payload that would run script if it were ever put into a page as markup.
const HOSTILE: &str = r#"<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_embedded_and_locked_down() {
    let server = TestServer::start().await;
    for path in [
        "/portal/",
        "/ui/",
        "/assets/dom.js",
        "/assets/portal.js",
        "/assets/kait.css",
    ] {
        let response = server
            .http
            .get(format!("{}{path}", server.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("innerHTML"),
            "{path} never writes markup from data"
        );
        assert!(
            !body.contains("http://") || path.ends_with(".js"),
            "{path}: no other origin"
        );
    }
    let (status, _) = server.get("/assets/../secrets.key").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = server.get("/assets/nothing.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    server.stop().await;
}

/// Signs in to the dashboard over HTTP: the cookie header to send back and the CSRF token.
async fn sign_in(server: &TestServer, token: &str) -> (StatusCode, Option<String>, Value) {
    let response = server
        .http
        .post(format!("{}/ui/session", server.base_url))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|value| value.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, cookie, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_session_is_the_admin_with_csrf_on_changes() {
    let server = TestServer::start().await;
    let (status, cookie, _) = sign_in(&server, "not the admin token").await;
    assert_eq!((status, cookie), (StatusCode::UNAUTHORIZED, None));
    let (status, set_cookie, body) = sign_in(&server, ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    let set_cookie = set_cookie.unwrap();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = body["csrf"].as_str().unwrap().to_owned();
    assert!(!cookie.contains(&csrf));

    let call = |method: Method, path: &str, csrf: Option<&str>, cookie: &str| {
        let mut request = server
            .http
            .request(method, format!("{}{path}", server.base_url))
            .header("cookie", cookie.to_owned());
        if let Some(csrf) = csrf {
            request = request.header("x-kait-csrf", csrf.to_owned());
        }
        request.json(&json!({"name": "from the dashboard"})).send()
    };
    let reads = call(Method::GET, "/api/v1/app", None, &cookie)
        .await
        .unwrap();
    assert_eq!(
        reads.status(),
        StatusCode::OK,
        "reads with the cookie alone"
    );
    let metrics = call(Method::GET, "/metrics", None, &cookie).await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let unguarded = call(Method::POST, "/api/v1/app", None, &cookie)
        .await
        .unwrap();
    assert_eq!(unguarded.status(), StatusCode::BAD_REQUEST);
    let body: Value = unguarded.json().await.unwrap();
    assert_eq!(body["code"], "csrf_token_missing");
    let wrong = call(Method::POST, "/api/v1/app", Some("0000"), &cookie)
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    let made = call(Method::POST, "/api/v1/app", Some(&csrf), &cookie)
        .await
        .unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);
    let (_, apps) = server.get("/api/v1/app").await;
    assert_eq!(
        apps["data"].as_array().unwrap().len(),
        1,
        "only the guarded change happened"
    );

    // A forged or altered cookie is nobody.
    let (expiry, mac) = cookie.split_once('=').unwrap().1.split_once('.').unwrap();
    for forged in [
        format!(
            "kait_session={}.{mac}",
            expiry.parse::<i64>().unwrap() + 3600
        ),
        format!("kait_session={expiry}.{}", "0".repeat(mac.len())),
        "kait_session=".to_owned(),
    ] {
        let response = call(Method::GET, "/api/v1/app", None, &forged)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{forged}");
    }
    let response = server
        .http
        .get(format!("{}/ui/session", server.base_url))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap();
    let again: Value = response.json().await.unwrap();
    assert_eq!(
        again["csrf"],
        csrf.as_str(),
        "a reloaded page gets its CSRF token back"
    );

    // Signing out needs the CSRF token too, and clears the cookie.
    let response = call(Method::DELETE, "/ui/session", None, &cookie)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = call(Method::DELETE, "/ui/session", Some(&csrf), &cookie)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, body) = server.post("/ui/session", "not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let huge = json!({ "token": "x".repeat(10_000) }).to_string();
    let (status, body) = server.post("/ui/session", &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    server.stop().await;
}

/// An application with an event type that has an example, and a portal link for it.
async fn portal_setup(server: &TestServer) -> (String, String) {
    let svix = server.svix();
    let mut event_type = EventTypeIn::new("camera.motion".into(), "Motion seen".into());
    event_type.schemas = Some(
        json!({"1": {"type": "object", "examples": [{"camera": "gate", "confidence": 0.93}]}}),
    );
    svix.event_type().create(event_type, None).await.unwrap();
    let app = server.create_app("Site 7").await;
    let access = svix
        .authentication()
        .app_portal_access(app.clone(), AppPortalAccessIn::new(), None)
        .await
        .unwrap();
    (app, access.url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drives Chromium (apt install chromium chromium-driver): run with -- --ignored; CI does"]
async fn a_consumer_manages_endpoints_in_the_portal() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (app, link) = portal_setup(&server).await;
    let other = server.create_app("Someone else").await;
    let others_message = server
        .send(&other, "camera.motion", json!({"private": true}))
        .await;
    let browser = Browser::start().await;
    let client = &browser.client;
    client.goto(&link).await.unwrap();
    browser.wait_for_text("#title", "Site 7").await;
    let url = client.current_url().await.unwrap();
    assert!(
        !url.as_str().contains("token="),
        "the token left the address bar: {url}"
    );

    // Add an endpoint.
    browser.click("#add-endpoint").await;
    browser
        .type_into("#endpoint-form input[name=url]", &receiver.url)
        .await;
    browser
        .type_into("#endpoint-form input[name=description]", "gate camera hook")
        .await;
    browser.screenshot("portal-add-endpoint").await;
    browser.click("#endpoint-form button[type=submit]").await;
    browser.wait_for("#send-example").await;
    let (_, endpoints) = server.get(&format!("/api/v1/app/{app}/endpoint")).await;
    assert_eq!(endpoints["data"][0]["url"], receiver.url.as_str());
    let endpoint_id = endpoints["data"][0]["id"].as_str().unwrap().to_owned();

    // Send an example: it arrives, signed, and its attempt is shown.
    browser.click("#send-example").await;
    browser.wait_for_text("#payload", "gate").await;
    let received = receiver.wait_for(1, WAIT).await;
    assert_eq!(
        received[0].json(),
        json!({"camera": "gate", "confidence": 0.93})
    );
    let secret = server.secret(&app, &endpoint_id).await;
    crate::support::assert_signed(&received[0], &secret);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        client.refresh().await.unwrap();
        if client
            .find(Locator::Css("button[data-attempt]"))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the attempt never showed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.click("button[data-attempt]").await;
    browser.wait_for_text("#attempt-detail", "→ 200").await;
    // The request as the receiver got it: its body byte for byte, its id and timestamp.
    let body = browser.wait_for_text("#request-body", "gate").await;
    assert_eq!(body.as_bytes(), &received[0].body[..]);
    let headers = browser
        .wait_for_text("#request-headers", "webhook-id")
        .await;
    for name in ["webhook-id", "webhook-timestamp"] {
        assert!(
            headers.contains(&format!("{name}: {}", received[0].header(name))),
            "{headers}"
        );
    }
    browser.screenshot("portal-message").await;

    // Resend it.
    browser.click("button[data-endpoint]").await;
    receiver.wait_for(2, WAIT).await;

    // Reveal and rotate the secret.
    client
        .goto(&format!(
            "{}/portal/#/endpoint/{endpoint_id}",
            server.base_url
        ))
        .await
        .unwrap();
    browser.click("#reveal-secret").await;
    browser.wait_for_text("#secret", "whsec_").await;
    assert_eq!(browser.wait_for_text("#secret", "whsec_").await, secret);
    browser.click("#rotate-secret").await;
    client.accept_alert().await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let shown = client
            .find(Locator::Css("#secret"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if shown.starts_with("whsec_") && shown != secret {
            assert_eq!(shown, server.secret(&app, &endpoint_id).await);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated secret never showed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.screenshot("portal-endpoint").await;

    // A payload holding markup is shown as text and runs nothing.
    let hostile = server
        .send(&app, "camera.motion", json!({"note": HOSTILE}))
        .await;
    client
        .goto(&format!("{}/portal/#/message/{hostile}", server.base_url))
        .await
        .unwrap();
    let shown = browser.wait_for_text("#payload", "onerror").await;
    assert!(shown.contains(r#"<img src=x onerror="#), "{shown}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ran = client
        .execute("return window.__xss === undefined", vec![])
        .await
        .unwrap();
    assert_eq!(ran, json!(true), "the payload's script ran");
    assert!(
        client.find(Locator::Css("#payload img")).await.is_err(),
        "no element made from data"
    );

    // Another application's message is not reachable with this portal.
    client
        .goto(&format!(
            "{}/portal/#/message/{others_message}",
            server.base_url
        ))
        .await
        .unwrap();
    browser.wait_for_text(".notice.error", "404").await;
    let status = client
        .execute(
            "const session = JSON.parse(sessionStorage.getItem('kait.portal'));\
             return fetch('/api/v1/app/' + arguments[0], {headers: {Authorization: 'Bearer ' + session.token}})\
               .then(response => response.status);",
            vec![json!(other)],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));

    // Edit: description, event-type filter, XML, a custom header.
    client
        .goto(&format!(
            "{}/portal/#/endpoint/{endpoint_id}/edit",
            server.base_url
        ))
        .await
        .unwrap();
    browser
        .type_into("#endpoint-form input[name=description]", "gate, in XML")
        .await;
    browser
        .click("#endpoint-form select[name=eventTypes] option[value='camera.motion']")
        .await;
    browser
        .click("#endpoint-form select[name=format] option[value=xml]")
        .await;
    browser
        .type_into("#endpoint-form textarea[name=headers]", "X-Team: sre")
        .await;
    browser.click("#endpoint-form button[type=submit]").await;
    browser.wait_for_text("main", "gate, in XML").await;
    let (_, edited) = server
        .get(&format!("/api/v1/app/{app}/endpoint/{endpoint_id}"))
        .await;
    assert_eq!(edited["filterTypes"], json!(["camera.motion"]), "{edited}");
    assert_eq!(edited["format"], "xml");
    let (_, headers) = server
        .get(&format!("/api/v1/app/{app}/endpoint/{endpoint_id}/headers"))
        .await;
    assert_eq!(headers["headers"]["X-Team"], "sre", "{headers}");

    // A transformation: tested on a sample, then saved and switched on.
    browser
        .type_into(
            "#transformation-code",
            "function handler(webhook) { webhook.payload.seen = 'yes'; return webhook; }",
        )
        .await;
    browser
        .type_into("#transformation-payload", r#"{"a": 1}"#)
        .await;
    browser.click("#test-transformation").await;
    browser
        .wait_for_text("#transformation-output", "seen")
        .await;
    browser.click("#transformation-enabled").await;
    browser.click("#save-transformation").await;
    browser
        .wait_for_text(".notice.ok", "Transformation saved")
        .await;
    let (_, saved) = server
        .get(&format!(
            "/api/v1/app/{app}/endpoint/{endpoint_id}/transformation"
        ))
        .await;
    assert_eq!(saved["enabled"], true, "{saved}");
    assert!(saved["code"].as_str().unwrap().contains("seen"));

    // Recover since a time: the failed deliveries since then go again (none failed here).
    client
        .execute(
            "document.getElementById('recover-since').value = '2020-01-01T00:00';",
            vec![],
        )
        .await
        .unwrap();
    browser.click("#recover").await;
    browser
        .wait_for_text(".notice.ok", "will be sent again")
        .await;

    // The event-type catalog, with schemas and examples.
    client
        .goto(&format!("{}/portal/#/event-types", server.base_url))
        .await
        .unwrap();
    browser.wait_for_text("main", "confidence").await;
    browser.screenshot("portal-event-types").await;

    // Pause, then sign out: the token is ended.
    client
        .goto(&format!(
            "{}/portal/#/endpoint/{endpoint_id}",
            server.base_url
        ))
        .await
        .unwrap();
    browser.click("#pause").await;
    server
        .wait_until(
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}"),
            WAIT,
            |endpoint| endpoint["disabled"] == true,
        )
        .await;
    // Delete (confirmed), then sign out: the token is ended.
    client
        .goto(&format!(
            "{}/portal/#/endpoint/{endpoint_id}",
            server.base_url
        ))
        .await
        .unwrap();
    browser.click("#delete").await;
    client.accept_alert().await.unwrap();
    browser.wait_for_text("main", "No endpoints yet").await;
    let (status, _) = server
        .get(&format!("/api/v1/app/{app}/endpoint/{endpoint_id}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let token = link.split("token=").nth(1).unwrap().to_owned();
    browser.click("#logout").await;
    browser.wait_for_text("main h2", "Signed out").await;
    let (status, _) = server
        .request_with(
            Method::GET,
            &format!("/api/v1/app/{app}"),
            None,
            Some(&token),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drives Chromium (apt install chromium chromium-driver): run with -- --ignored; CI does"]
async fn a_read_only_portal_shows_only_what_it_may_do() {
    let server = TestServer::start().await;
    let app = server.create_app("Site 9").await;
    let endpoint = server
        .create_endpoint(&app, json!({"url": "https://example.com/hook"}))
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let message = server.send(&app, "camera.motion", json!({"n": 1})).await;
    let mut read_only = AppPortalAccessIn::new();
    // Deprecated by Svix in favour of capabilities, still honoured (and still sent).
    #[allow(deprecated)]
    {
        read_only.read_only = Some(true);
    }
    let link = server
        .svix()
        .authentication()
        .app_portal_access(app.clone(), read_only, None)
        .await
        .unwrap()
        .url;
    let browser = Browser::start().await;
    let client = &browser.client;
    client.goto(&link).await.unwrap();
    browser.wait_for_text("#title", "Site 9").await;
    // The page has asked what the token may do before drawing anything.
    let told = client
        .execute("return document.body.dataset.capabilities;", vec![])
        .await
        .unwrap();
    assert_eq!(told, json!("ViewBase"));
    browser.wait_for_text("main", "example.com/hook").await;
    let absent = |css: &'static str| async move {
        let found = client.find_all(Locator::Css(css)).await.unwrap();
        assert!(found.is_empty(), "{css} is shown to a read-only token");
    };
    absent("#add-endpoint").await;

    client
        .goto(&format!(
            "{}/portal/#/endpoint/{endpoint_id}",
            server.base_url
        ))
        .await
        .unwrap();
    browser.wait_for("#transformation-code").await;
    for control in [
        "#edit",
        "#pause",
        "#delete",
        "#reveal-secret",
        "#rotate-secret",
        "#send-example",
        "#recover",
        "#save-transformation",
        "#test-transformation",
    ] {
        absent(control).await;
    }
    let read_only_code = client
        .execute(
            "return document.getElementById('transformation-code').readOnly;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(read_only_code, json!(true));
    browser.screenshot("portal-read-only").await;

    // The message is readable; resending it is not offered.
    client
        .goto(&format!("{}/portal/#/message/{message}", server.base_url))
        .await
        .unwrap();
    browser.wait_for_text("#payload", "\"n\"").await;
    browser.wait_for_text("main", "example.com/hook").await;
    absent("button[data-endpoint]").await;
    // The form behind "Add endpoint" says so when reached by its address.
    client
        .goto(&format!("{}/portal/#/endpoint/new", server.base_url))
        .await
        .unwrap();
    browser.wait_for_text("main h2", "Not allowed").await;
    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drives Chromium (apt install chromium chromium-driver): run with -- --ignored; CI does"]
async fn an_operator_signs_in_and_watches_traffic_on_the_dashboard() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app = server.create_app("Site 7").await;
    server
        .create_endpoint(&app, json!({"url": receiver.url}))
        .await;
    server
        .send(&app, "camera.motion", json!({"camera": "gate"}))
        .await;
    let browser = Browser::start().await;
    let client = &browser.client;
    client
        .goto(&format!("{}/ui/", server.base_url))
        .await
        .unwrap();
    browser.type_into("#admin-token", "wrong").await;
    browser.click("#sign-in button[type=submit]").await;
    browser.wait_for_text(".notice.error", "401").await;
    browser.type_into("#admin-token", ADMIN_TOKEN).await;
    browser.screenshot("dashboard-sign-in").await;
    browser.click("#sign-in button[type=submit]").await;
    browser.wait_for_text("main", "Site 7").await;
    let cookie_visible = client
        .execute("return document.cookie", vec![])
        .await
        .unwrap();
    assert_eq!(cookie_visible, json!(""), "the session cookie is HttpOnly");
    browser.screenshot("dashboard-apps").await;

    // The application: its endpoint's health, and a live tail of new messages.
    client
        .goto(&format!("{}/ui/#/app/{app}", server.base_url))
        .await
        .unwrap();
    browser.wait_for("#tail").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server
        .send(
            &app,
            "door.opened",
            json!({"door": "north", "note": HOSTILE}),
        )
        .await;
    browser.wait_for_text("#tail", "door.opened").await;
    let ran = client
        .execute("return window.__xss === undefined", vec![])
        .await
        .unwrap();
    assert_eq!(ran, json!(true), "a payload in the live view ran");
    browser.click("#portal-link").await;
    browser.wait_for_text("#portal-url", "/portal/#app=").await;
    browser.screenshot("dashboard-app").await;

    // Traffic from the server's own counters.
    client
        .goto(&format!("{}/ui/#/traffic", server.base_url))
        .await
        .unwrap();
    browser.wait_for("#accepted-rate").await;
    browser.screenshot("dashboard-traffic").await;
    for (view, heading) in [
        ("sources", "Sources"),
        ("pipes", "Pipes"),
        ("devices", "Devices"),
        ("plugins", "Plugins"),
    ] {
        client
            .goto(&format!("{}/ui/#/{view}", server.base_url))
            .await
            .unwrap();
        browser.wait_for_text("main h2", heading).await;
        assert!(
            client.find(Locator::Css(".notice.error")).await.is_err(),
            "{view} failed"
        );
    }

    // A change from the page carries the CSRF token; one without it is refused.
    let status = client
        .execute(
            "return fetch('/api/v1/app', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{\"name\":\"x\"}'}).then(r => r.status);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(400));
    browser.click("#sign-out").await;
    browser.wait_for("#admin-token").await;
    let status = client
        .execute("return fetch('/api/v1/app').then(r => r.status);", vec![])
        .await
        .unwrap();
    assert_eq!(status, json!(401), "signed out");
    browser.close().await;
    server.stop().await;
}
