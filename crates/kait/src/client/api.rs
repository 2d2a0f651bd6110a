//! One HTTP client for the commands: the token on every request, and a refusal turned into a
//! message with the server's `code` and `detail`.

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::Value;

use super::profile::Connection;

pub struct Api {
    http: reqwest::Client,
    connection: Connection,
}

impl Api {
    pub fn new(connection: Connection) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, connection })
    }

    pub fn server_url(&self) -> &str {
        &self.connection.server_url
    }

    /// A request builder for `path` (from `/api/v1/…`) with the token.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.connection.server_url))
            .bearer_auth(&self.connection.token)
    }

    /// Sends and reads a JSON answer (`Null` for an empty one); any status but 2xx is an
    /// error that says what the server said.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = self.response(request).await?;
        let bytes = response.bytes().await.context("reading the answer")?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).context("the server's answer is not JSON")
    }

    /// Sends and returns the response if it is a 2xx.
    pub async fn response(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        let response = request.send().await.map_err(|error| {
            anyhow::anyhow!(
                "cannot reach the server at {}: {}",
                self.connection.server_url,
                root_cause(&error)
            )
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        bail!("{}", refusal(status, &body))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request(Method::POST, path).json(body)).await
    }
}

/// "the server refused (404 not_found): Application not found", with each field problem.
pub fn refusal(status: reqwest::StatusCode, body: &Value) -> String {
    let code = body["code"].as_str().unwrap_or("error");
    let detail = match &body["detail"] {
        Value::String(detail) => detail.clone(),
        Value::Array(problems) => problems
            .iter()
            .map(|problem| {
                let at: Vec<String> = problem["loc"]
                    .as_array()
                    .map(|loc| {
                        loc.iter()
                            .map(|part| part.to_string().replace('"', ""))
                            .collect()
                    })
                    .unwrap_or_default();
                format!(
                    "{}: {}",
                    at.join("."),
                    problem["msg"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => status.canonical_reason().unwrap_or("").to_owned(),
    };
    format!("the server refused ({} {code}): {detail}", status.as_u16())
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// A path segment from user input (an id, a uid), percent-encoded.
pub fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_code_and_detail() {
        let not_found = refusal(
            reqwest::StatusCode::NOT_FOUND,
            &serde_json::json!({"code": "not_found", "detail": "Application not found"}),
        );
        assert_eq!(
            not_found,
            "the server refused (404 not_found): Application not found"
        );
        let invalid = refusal(
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({"code": "validation", "detail": [
                {"loc": ["body", "eventType"], "msg": "bad name"},
            ]}),
        );
        assert_eq!(
            invalid,
            "the server refused (422 validation): body.eventType: bad name"
        );
        assert!(refusal(reqwest::StatusCode::BAD_GATEWAY, &Value::Null).contains("502"));
    }

    #[test]
    fn segments_cannot_leave_their_place_in_the_path() {
        assert_eq!(segment("site-7"), "site-7");
        assert_eq!(segment("../admin?x=1"), "..%2Fadmin%3Fx%3D1");
    }
}
