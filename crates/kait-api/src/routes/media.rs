//! `GET /media/{attachment_id}?ep=…&exp=…&sig=…`: an attachment's bytes, for whoever holds a
//! link Kait signed for one of its endpoints (the link is the credential; no token). A single
//! `Range` is answered 206 (players seek, downloads resume); the `ETag` is the SHA-256.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, IF_RANGE, RANGE,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kait_core::AttachmentId;
use kait_media::range::{self, Answer};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::{ApiError, ApiState};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MediaPath {
    /// The attachment id (`att_…`)
    pub attachment_id: String,
}

/// The signed link's parameters (as the webhook's `attachments[].url` carries them).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct LinkQuery {
    /// The endpoint the link was signed for
    pub ep: String,
    /// When the link expires (Unix seconds)
    pub exp: i64,
    /// The link's signature
    pub sig: String,
}

#[utoipa::path(
    get,
    operation_id = "v1.media.get",
    path = "/media/{attachment_id}",
    tag = "attachment",
    summary = "An attachment's bytes, through a link signed for an endpoint (supports Range)",
    params(MediaPath, LinkQuery, ("Range" = Option<String>, Header, description = "One byte range: `bytes=A-B`, `bytes=A-` or `bytes=-N`")),
    responses(
        (status = 200, description = "The whole attachment", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The range asked for", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 403, description = "A malformed, altered or expired link", body = crate::wire::ErrorOut),
        (status = 404, body = crate::wire::ErrorOut),
        (status = 416, description = "The range starts past the end")
    )
)]
pub async fn get(
    State(state): State<ApiState>,
    Path(MediaPath { attachment_id }): Path<MediaPath>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(media) = state.media.clone() else {
        return Err(ApiError::NotFound("attachment"));
    };
    let id = AttachmentId::parse(&attachment_id)
        .ok_or_else(|| ApiError::LinkRefused("not a link to an attachment".into()))?;
    let now = kait_core::time::now_millis() / 1000;
    media
        .links
        .verify(id.as_str(), query.as_deref().unwrap_or_default(), now)
        .map_err(|error| ApiError::LinkRefused(error.to_string()))?;
    let attachment = state
        .store
        .get_attachment(&id)
        .await?
        .ok_or(ApiError::NotFound("attachment"))?;
    let etag = format!("\"{}\"", attachment.sha256);
    let mut common = HeaderMap::new();
    common.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    common.insert(ETAG, HeaderValue::from_str(&etag).expect("hex in quotes"));
    common.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    // Whatever the blob holds, a browser opening the link runs none of it.
    common.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    common.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    let matches_etag = |name| {
        headers
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .split(',')
                    .any(|tag| tag.trim() == etag || tag.trim() == "*")
            })
    };
    if matches_etag(IF_NONE_MATCH) {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    if let Ok(value) = HeaderValue::from_str(&attachment.content_type) {
        common.insert(CONTENT_TYPE, value);
    }
    common.insert(
        CONTENT_DISPOSITION,
        disposition(attachment.filename.as_deref()),
    );
    // A range is for the version the client has (If-Range), else the whole blob is sent.
    let range_header = headers
        .get(RANGE)
        .and_then(|value| value.to_str().ok())
        .filter(|_| headers.get(IF_RANGE).is_none() || matches_etag(IF_RANGE));
    let size = attachment.size;
    let (status, range) = match range::answer(range_header, size) {
        Answer::Full => (StatusCode::OK, None),
        Answer::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, Some((start, end))),
        Answer::Unsatisfiable => {
            common.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("digits"),
            );
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, common).into_response());
        }
    };
    let stream = match media.blobs.read(id.as_str(), range).await {
        Ok(stream) => stream,
        Err(kait_media::BlobError::NotFound) => return Err(ApiError::NotFound("attachment")),
        Err(error) => return Err(ApiError::BlobStore(error.to_string())),
    };
    let length = match range {
        Some((start, end)) => {
            common.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")).expect("digits"),
            );
            end - start + 1
        }
        None => size,
    };
    common.insert(CONTENT_LENGTH, HeaderValue::from(length));
    metrics::counter!("kait_attachment_bytes_served_total").increment(length);
    Ok((status, common, Body::from_stream(stream)).into_response())
}

/// `inline` (a player or viewer shows it), with the upload's filename if it had one: as a
/// quoted ASCII fallback and RFC 8187's UTF-8 form.
fn disposition(filename: Option<&str>) -> HeaderValue {
    let Some(filename) = filename else {
        return HeaderValue::from_static("inline");
    };
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .filter(|c| !matches!(c, '"' | '\\'))
        .collect();
    let encoded: String = url::form_urlencoded::byte_serialize(filename.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    HeaderValue::from_str(&format!(
        "inline; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or(HeaderValue::from_static("inline"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_are_quoted_safely_in_both_forms() {
        assert_eq!(disposition(None), "inline");
        assert_eq!(
            disposition(Some("front door.mp4")),
            "inline; filename=\"front door.mp4\"; filename*=UTF-8''front%20door.mp4"
        );
        let value = disposition(Some("tür\r\n.jpg"));
        let text = value.to_str().unwrap();
        assert!(text.starts_with("inline; filename=\"t_r__.jpg\""), "{text}");
        assert!(
            text.ends_with("filename*=UTF-8''t%C3%BCr%0D%0A.jpg"),
            "{text}"
        );
    }
}
