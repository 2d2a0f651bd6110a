//! Source kinds and their configuration, in Svix Ingest's shapes (`type` and `config` of
//! `IngestSourceIn`).

use std::collections::BTreeMap;

use kait_core::signing::VerificationKey;
use serde_json::{Map, Value};

/// The kinds of sender Kait verifies. Svix's names where Svix has them; `standard-webhooks`
/// is Kait's name for any sender signing by the Standard Webhooks spec (as `svix` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// Anything; optionally a static bearer token or basic credentials.
    GenericWebhook,
    /// Kait itself, on a schedule.
    Cron,
    Svix,
    StandardWebhooks,
    Github,
    Stripe,
    Shopify,
    Slack,
}

impl SourceKind {
    pub const ALL: [SourceKind; 8] = [
        Self::GenericWebhook,
        Self::Cron,
        Self::Svix,
        Self::StandardWebhooks,
        Self::Github,
        Self::Stripe,
        Self::Shopify,
        Self::Slack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GenericWebhook => "generic-webhook",
            Self::Cron => "cron",
            Self::Svix => "svix",
            Self::StandardWebhooks => "standard-webhooks",
            Self::Github => "github",
            Self::Stripe => "stripe",
            Self::Shopify => "shopify",
            Self::Slack => "slack",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The names accepted, for error messages.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

/// How a source's requests are verified (or, for `cron`, what it produces).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    GenericWebhook {
        /// `Authorization: Bearer <token>` must carry this, if set.
        bearer_token: Option<String>,
        /// `Authorization: Basic …` must carry these, if set.
        basic: Option<(String, String)>,
    },
    Cron {
        schedule: String,
        payload: String,
        content_type: Option<String>,
    },
    /// `svix` and `standard-webhooks`: a `whsec_` (HMAC) or `whpk_` (Ed25519) key, checked
    /// when the config is read.
    StandardWebhooks {
        secret: String,
    },
    /// GitHub's secret is optional in Svix's model; without one nothing is verified.
    Github {
        secret: Option<String>,
    },
    Stripe {
        secret: String,
    },
    Shopify {
        secret: String,
    },
    Slack {
        secret: String,
    },
}

/// Why a `config` object was refused: the field and what is wrong, for a 422.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigProblem {
    pub field: String,
    pub problem: String,
}

fn problem(field: &str, problem: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// The longest secret, token or payload a config field may hold.
const MAX_FIELD_BYTES: usize = 64 * 1024;

impl SourceConfig {
    /// Reads `config` for `kind`, refusing unknown fields (a misspelt `secret` must not
    /// silently leave a source unverified) and missing or malformed ones.
    pub fn parse(kind: SourceKind, config: &Value) -> Result<Self, ConfigProblem> {
        let Value::Object(object) = config else {
            return Err(problem("config", "must be an object"));
        };
        let allowed: &[&str] = match kind {
            SourceKind::GenericWebhook => &["bearerToken", "basicAuth"],
            SourceKind::Cron => &["schedule", "payload", "contentType"],
            _ => &["secret"],
        };
        if let Some(unknown) = object.keys().find(|key| !allowed.contains(&key.as_str())) {
            return Err(problem(
                &format!("config.{unknown}"),
                format!(
                    "is not a setting of a {} source (it takes {})",
                    kind.as_str(),
                    allowed.join(", ")
                ),
            ));
        }
        let text = |field: &str| -> Result<Option<String>, ConfigProblem> {
            match object.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) if text.len() > MAX_FIELD_BYTES => Err(problem(
                    &format!("config.{field}"),
                    format!("must be at most {MAX_FIELD_BYTES} bytes"),
                )),
                Some(Value::String(text)) if text.is_empty() => {
                    Err(problem(&format!("config.{field}"), "must not be empty"))
                }
                Some(Value::String(text)) => Ok(Some(text.clone())),
                Some(_) => Err(problem(&format!("config.{field}"), "must be a string")),
            }
        };
        let required = |field: &str| -> Result<String, ConfigProblem> {
            text(field)?.ok_or_else(|| problem(&format!("config.{field}"), "is required"))
        };
        Ok(match kind {
            SourceKind::GenericWebhook => {
                let basic = match object.get("basicAuth") {
                    None | Some(Value::Null) => None,
                    Some(Value::Object(pair)) => {
                        let field = |name: &str| match pair.get(name) {
                            Some(Value::String(value)) if !value.is_empty() => Ok(value.clone()),
                            _ => Err(problem(
                                &format!("config.basicAuth.{name}"),
                                "is required (a non-empty string)",
                            )),
                        };
                        Some((field("username")?, field("password")?))
                    }
                    Some(_) => {
                        return Err(problem(
                            "config.basicAuth",
                            "must be {\"username\": …, \"password\": …}",
                        ));
                    }
                };
                Self::GenericWebhook {
                    bearer_token: text("bearerToken")?,
                    basic,
                }
            }
            SourceKind::Cron => {
                let schedule = required("schedule")?;
                crate::Schedule::parse(&schedule)
                    .map_err(|error| problem("config.schedule", error))?;
                Self::Cron {
                    schedule,
                    payload: required("payload")?,
                    content_type: text("contentType")?,
                }
            }
            SourceKind::Svix | SourceKind::StandardWebhooks => {
                let secret = required("secret")?;
                VerificationKey::parse(&secret)
                    .map_err(|error| problem("config.secret", error.to_string()))?;
                Self::StandardWebhooks { secret }
            }
            SourceKind::Github => Self::Github {
                secret: text("secret")?,
            },
            SourceKind::Stripe => Self::Stripe {
                secret: required("secret")?,
            },
            SourceKind::Shopify => Self::Shopify {
                secret: required("secret")?,
            },
            SourceKind::Slack => Self::Slack {
                secret: required("secret")?,
            },
        })
    }

    /// The config as the API shows it: what is not secret. Svix's `…ConfigOut` models are
    /// empty for every signed kind; a generic source shows only whether it checks credentials.
    pub fn public(&self) -> Value {
        match self {
            Self::Cron {
                schedule,
                payload,
                content_type,
            } => {
                let mut out = BTreeMap::new();
                out.insert("schedule", Value::from(schedule.clone()));
                out.insert("payload", Value::from(payload.clone()));
                if let Some(content_type) = content_type {
                    out.insert("contentType", Value::from(content_type.clone()));
                }
                serde_json::to_value(out).expect("a map of strings")
            }
            _ => Value::Object(Map::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_round_trip_and_unknown_ones_are_refused() {
        for kind in SourceKind::ALL {
            assert_eq!(SourceKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(SourceKind::parse("carrier-pigeon"), None);
        assert!(SourceKind::names().contains("github"));
    }

    #[test]
    fn configs_are_checked_field_by_field() {
        let stripe = SourceConfig::parse(SourceKind::Stripe, &json!({ "secret": "whsec_abc" }));
        assert_eq!(
            stripe,
            Ok(SourceConfig::Stripe {
                secret: "whsec_abc".into()
            })
        );
        let missing = SourceConfig::parse(SourceKind::Slack, &json!({})).unwrap_err();
        assert_eq!(missing.field, "config.secret");
        let misspelt = SourceConfig::parse(SourceKind::Stripe, &json!({ "secert": "x" }));
        assert_eq!(misspelt.unwrap_err().field, "config.secert");
        let typed = SourceConfig::parse(SourceKind::Shopify, &json!({ "secret": 5 }));
        assert_eq!(typed.unwrap_err().problem, "must be a string");
        let bad_key = SourceConfig::parse(SourceKind::Svix, &json!({ "secret": "whsec_%%%" }));
        assert_eq!(bad_key.unwrap_err().field, "config.secret");
        assert!(SourceConfig::parse(SourceKind::Github, &json!({})).is_ok());
        assert!(SourceConfig::parse(SourceKind::Github, &json!(null)).is_err());
        assert!(SourceConfig::parse(SourceKind::Github, &json!([])).is_err());
        let cron = SourceConfig::parse(
            SourceKind::Cron,
            &json!({ "schedule": "*/5 * * * *", "payload": "{}" }),
        )
        .unwrap();
        assert_eq!(
            cron.public(),
            json!({ "schedule": "*/5 * * * *", "payload": "{}" })
        );
    }

    #[test]
    fn secrets_are_never_shown() {
        let basic = SourceConfig::parse(
            SourceKind::GenericWebhook,
            &json!({ "basicAuth": { "username": "u", "password": "p" }, "bearerToken": "t" }),
        )
        .unwrap();
        assert_eq!(basic.public(), json!({}));
        let slack = SourceConfig::parse(SourceKind::Slack, &json!({ "secret": "s3cr3t" })).unwrap();
        assert!(!slack.public().to_string().contains("s3cr3t"));
        let half = SourceConfig::parse(
            SourceKind::GenericWebhook,
            &json!({ "basicAuth": { "username": "u" } }),
        );
        assert_eq!(half.unwrap_err().field, "config.basicAuth.password");
    }
}
