//! Request extractors that turn bad input into Svix-shaped errors.
//!
//! [`ValidJson`] tells apart a body that is too large (413), one that is not JSON (400) and
//! JSON with wrong or missing fields (422, with the field's path in `loc`). [`ListQuery`] reads
//! the query string itself because Svix clients send list parameters both repeated
//! (`event_types=a&event_types=b`) and comma-joined (`event_types=a,b`).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::DateTime;
use kait_core::validate::Problem;
use kait_store::{Order, PageRequest};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// Default and largest page sizes, as in Svix.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 250;

pub struct ValidJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let LimitedBody(bytes) = LimitedBody::from_request(request, state).await?;
        parse_json(&bytes).map(ValidJson)
    }
}

/// The raw request body, within the size limit (a larger one is a 413 in Kait's shape).
pub struct LimitedBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(request, state)
            .await
            .map(LimitedBody)
            .map_err(|rejection| match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(
                    "the request body is larger than the server's limit".into(),
                ),
                _ => ApiError::BadRequest {
                    code: "invalid_body",
                    detail: rejection.body_text(),
                },
            })
    }
}

/// Parses a JSON body, reporting syntax errors as 400 and shape errors as 422. Every body of
/// this API is a JSON object: anything else is refused before serde, which would otherwise
/// read a struct from an array of its fields.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    if first.is_some_and(|byte| *byte != b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
    {
        return Err(ApiError::Validation(vec![Problem {
            loc: vec!["body".to_owned()],
            msg: "the body must be a JSON object".to_owned(),
            kind: "type_error",
        }]));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    if result.is_ok()
        && let Err(error) = deserializer.end()
    {
        return Err(ApiError::BadRequest {
            code: "invalid_json",
            detail: format!("the request body is not valid JSON: {error}"),
        });
    }
    result.map_err(|error| {
        let inner = error.inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let mut loc = vec!["body".to_owned()];
                let path = error.path().to_string();
                if path != "." {
                    loc.extend(path.split('.').map(str::to_owned));
                }
                if let Some(field) = missing_field(&inner.to_string()) {
                    loc.push(field);
                }
                ApiError::Validation(vec![Problem {
                    loc,
                    msg: strip_position(&inner.to_string()),
                    kind: "type_error",
                }])
            }
            _ => ApiError::BadRequest {
                code: "invalid_json",
                detail: format!("the request body is not valid JSON: {inner}"),
            },
        }
    })
}

/// Like [`parse_json`], but an empty body means the defaults (Svix clients send none for
/// requests whose fields are all optional).
pub fn parse_json_or_default<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(T::default());
    }
    parse_json(bytes)
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// Drops serde_json's " at line 1 column 17" suffix, which means little to an API caller.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// The query parameters listings share, for the OpenAPI document ([`ListQuery`] reads them).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// Items per page (1–250, default 50).
    #[param(minimum = 1, maximum = 250)]
    limit: Option<u32>,
    /// Continue after this item (`iterator` of the previous page; `prevIterator` goes back).
    iterator: Option<String>,
    /// `ascending` or `descending`.
    #[param(pattern = "^(ascending|descending)$")]
    order: Option<String>,
}

/// The query parameters of a listing, parsed leniently but validated strictly.
#[derive(Debug, Default)]
pub struct ListQuery {
    pairs: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let pairs = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        Ok(Self { pairs })
    }
}

impl ListQuery {
    /// The last value given for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of `name`, repeated or comma-joined; `None` if absent.
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        let values: Vec<String> = self
            .pairs
            .iter()
            .filter(|(key, _)| key == name || key == &format!("{name}[]"))
            .flat_map(|(_, value)| value.split(','))
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
            .collect();
        (!values.is_empty()).then_some(values)
    }

    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(_) => Err(ApiError::invalid_query(name, "must be true or false")),
        }
    }

    /// An RFC 3339 time as milliseconds.
    pub fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|text| {
                DateTime::parse_from_rfc3339(text)
                    .map(|time| time.timestamp_millis())
                    .map_err(|_| ApiError::invalid_query(name, "must be an RFC 3339 date-time"))
            })
            .transpose()
    }

    pub fn page(&self) -> Result<PageRequest, ApiError> {
        let limit = match self.get("limit") {
            None => DEFAULT_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
                _ => {
                    return Err(ApiError::invalid_query(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_LIMIT}"),
                    ));
                }
            },
        };
        let order = match self.get("order") {
            None | Some("ascending") => Order::Ascending,
            Some("descending") => Order::Descending,
            Some(_) => {
                return Err(ApiError::invalid_query(
                    "order",
                    "must be ascending or descending",
                ));
            }
        };
        let (iterator, reverse) = match self.get("iterator").filter(|text| !text.is_empty()) {
            Some(text) => match text.strip_prefix('-') {
                Some(previous) => (Some(previous.to_owned()), true),
                None => (Some(text.to_owned()), false),
            },
            None => (None, false),
        };
        Ok(PageRequest {
            limit,
            iterator,
            reverse,
            order,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        count: u16,
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        let error = parse_json::<Sample>(b"{\"name\": ").unwrap_err();
        assert!(
            matches!(
                error,
                ApiError::BadRequest {
                    code: "invalid_json",
                    ..
                }
            ),
            "{error:?}"
        );
        let trailing = parse_json::<Sample>(b"{\"name\":\"a\",\"count\":1} x").unwrap_err();
        assert!(
            matches!(trailing, ApiError::BadRequest { .. }),
            "{trailing:?}"
        );
    }

    #[test]
    fn shape_errors_name_the_field() {
        let ApiError::Validation(problems) =
            parse_json::<Sample>(br#"{"name": "a", "count": "many"}"#).unwrap_err()
        else {
            panic!("expected a validation error")
        };
        assert_eq!(problems[0].loc, vec!["body", "count"]);
        let ApiError::Validation(problems) = parse_json::<Sample>(br#"{"name": "a"}"#).unwrap_err()
        else {
            panic!("expected a validation error")
        };
        assert_eq!(problems[0].loc, vec!["body", "count"]);
        assert_eq!(problems[0].msg, "missing field `count`");
    }

    #[test]
    fn bodies_must_be_objects_and_empty_optional_bodies_take_defaults() {
        #[derive(Debug, Default, serde::Deserialize)]
        #[allow(dead_code)]
        struct Optional {
            expiry: Option<u64>,
        }
        // serde reads a struct from an array of its fields; the API does not.
        let ApiError::Validation(problems) = parse_json::<Optional>(b"[null]").unwrap_err() else {
            panic!("expected a validation error")
        };
        assert_eq!(problems[0].loc, vec!["body"]);
        assert!(parse_json_or_default::<Optional>(b"  ").is_ok());
        assert!(parse_json_or_default::<Optional>(b"null").is_ok());
        // Not UTF-8 is not "empty".
        assert!(parse_json_or_default::<Optional>(b"\xff\x0e").is_err());
    }

    #[test]
    fn lists_accept_repeated_and_comma_joined() {
        let query = ListQuery {
            pairs: vec![
                ("event_types".into(), "a,b".into()),
                ("event_types".into(), "c".into()),
            ],
        };
        assert_eq!(query.list("event_types").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(query.list("channel"), None);
    }

    #[test]
    fn page_parameters_are_checked() {
        let query = |pairs: &[(&str, &str)]| ListQuery {
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert!(query(&[("limit", "0")]).page().is_err());
        assert!(query(&[("limit", "251")]).page().is_err());
        assert!(query(&[("order", "sideways")]).page().is_err());
        let page = query(&[("iterator", "-msg_x"), ("limit", "10")])
            .page()
            .unwrap();
        assert_eq!(
            (page.iterator.as_deref(), page.reverse, page.limit),
            (Some("msg_x"), true, 10)
        );
    }
}
