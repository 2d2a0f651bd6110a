//! Svix's transformation contract: the code defines `handler(webhook)`, where `webhook` is
//! `{method, url, eventType, payload, cancel}`, and returns it changed: another payload, URL
//! or method (`POST` or `PUT`), or `cancel: true` to drop this delivery.

use serde::{Deserialize, Serialize};

use crate::{Entry, Limits, Script, ScriptError};

/// What the handler is given.
#[derive(Debug, Clone, Serialize)]
pub struct TransformationInput<'a> {
    pub method: &'a str,
    pub url: &'a str,
    #[serde(rename = "eventType")]
    pub event_type: &'a str,
    pub payload: &'a serde_json::value::RawValue,
    pub cancel: bool,
}

/// What the handler returned, checked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TransformationOutput {
    pub method: String,
    pub url: String,
    /// The new payload, as JSON text (a JSON object).
    #[serde(deserialize_with = "object_text")]
    pub payload: String,
    #[serde(default)]
    pub cancel: bool,
}

fn object_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    if !value.is_object() {
        return Err(serde::de::Error::custom("payload must be an object"));
    }
    Ok(value.to_string())
}

/// A compiled transformation.
pub struct Transformation(Script);

impl Transformation {
    pub fn compile(code: &str, limits: Limits) -> Result<Self, ScriptError> {
        Script::compile(code, Entry::Named("handler"), limits).map(Self)
    }

    pub fn run(
        &self,
        input: &TransformationInput<'_>,
    ) -> Result<TransformationOutput, ScriptError> {
        read_output(&self.0.call_json(&input.to_json())?)
    }
}

impl TransformationInput<'_> {
    /// The handler's argument as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the input serializes")
    }
}

/// Reads and checks what a handler returned (JSON text).
pub fn read_output(result: &str) -> Result<TransformationOutput, ScriptError> {
    let output: TransformationOutput = serde_json::from_str(result).map_err(|error| {
        ScriptError::BadResult(format!(
            "handler must return {{method, url, payload, cancel}}: {error}"
        ))
    })?;
    if output.method != "POST" && output.method != "PUT" {
        return Err(ScriptError::BadResult(format!(
            "method must be POST or PUT, not {:?}",
            output.method
        )));
    }
    Ok(output)
}
