//! Endpoint transformations at delivery time: Svix's `handler(webhook)`, run on the shared
//! [`ScriptPool`] (user JavaScript never runs on the async workers).

use std::sync::Arc;

use kait_core::EndpointId;
use kait_script::{
    Call, CallError, Entry, ScriptError, ScriptPool, TransformationInput, TransformationOutput,
};
use serde_json::value::RawValue;

/// One webhook to transform.
pub struct Job {
    pub endpoint_id: EndpointId,
    pub code: Arc<str>,
    pub url: String,
    pub event_type: Arc<str>,
    /// The payload as JSON object text.
    pub payload: Arc<str>,
}

/// Runs the endpoint's transformation on one webhook.
pub async fn run(pool: &ScriptPool, job: Job) -> Result<TransformationOutput, CallError> {
    let payload: &RawValue = serde_json::from_str(&job.payload)
        .map_err(|error| ScriptError::BadResult(format!("the payload is not JSON: {error}")))?;
    let argument = TransformationInput {
        method: "POST",
        url: &job.url,
        event_type: &job.event_type,
        payload,
        cancel: false,
    }
    .to_json();
    let result = pool
        .call(Call {
            owner: job.endpoint_id.to_string(),
            code: job.code,
            entry: Entry::Named("handler"),
            argument,
        })
        .await?;
    Ok(kait_script::read_output(&result)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(code: &str) -> Job {
        Job {
            endpoint_id: EndpointId::generate(),
            code: Arc::from(code),
            url: "https://example.com/hook".into(),
            event_type: Arc::from("order.created"),
            payload: Arc::from(r#"{"total":5}"#),
        }
    }

    #[tokio::test]
    async fn the_handler_changes_the_webhook_and_its_result_is_checked() {
        let pool = ScriptPool::start(1, kait_script::Limits::default());
        let out = run(
            &pool,
            job("function handler(w) { w.payload.total *= 2; w.method = 'PUT'; return w; }"),
        )
        .await
        .unwrap();
        assert_eq!(out.payload, r#"{"total":10}"#);
        assert_eq!(out.method, "PUT");
        let error = run(
            &pool,
            job("function handler(w) { w.method = 'GET'; return w; }"),
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("POST or PUT"), "{error}");
    }
}
