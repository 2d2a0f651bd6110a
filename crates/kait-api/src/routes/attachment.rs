//! Attachments: `POST …/attachment` streams a blob into the blob store (hashed, its type
//! checked against its first bytes, refused past the size limit) and records it; messages then
//! reference it by id. `GET …/attachment/{id}` reads the record.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use futures_util::StreamExt;
use kait_core::time::now_millis;
use kait_core::{Attachment, AttachmentId};
use kait_media::UploadError;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::paths::AppPath;
use crate::wire::AttachmentOut;
use crate::{ApiError, ApiState};

/// `…/attachment/{attachment_id}`
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AttachmentPath {
    /// The application id (`app_…`) or uid
    pub app_id: String,
    /// The attachment id (`att_…`)
    pub attachment_id: String,
}

/// `POST …/attachment` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The name receivers see (`Content-Disposition`); at most 255 characters, no path.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = r#"^(?!\.\.?$)[^/\\"\u0000-\u001f\u007f-\u009f]+$"#
    )]
    pub filename: Option<String>,
}

/// The longest accepted filename and content type.
const MAX_FILENAME_CHARS: usize = 255;
const MAX_CONTENT_TYPE_BYTES: usize = 256;

impl UploadQuery {
    fn read(query: Option<&str>) -> Result<Self, ApiError> {
        let mut read = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if name != "filename" {
                return Err(ApiError::invalid_query(
                    &name,
                    "not a parameter of this route",
                ));
            }
            if read.filename.replace(value.into_owned()).is_some() {
                return Err(ApiError::invalid_query("filename", "given more than once"));
            }
        }
        if let Some(filename) = &read.filename {
            let count = filename.chars().count();
            if count == 0
                || count > MAX_FILENAME_CHARS
                || filename
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '/' | '\\' | '"'))
                || filename == "."
                || filename == ".."
            {
                return Err(ApiError::invalid_query(
                    "filename",
                    "must be 1 to 255 characters without control characters, quotes or slashes",
                ));
            }
        }
        Ok(read)
    }
}

/// The declared content type: a `type/subtype` header value of at most 256 bytes.
fn declared_type(headers: &HeaderMap) -> Result<String, ApiError> {
    let refuse = |detail: &str| ApiError::UnsupportedMediaType(detail.to_owned());
    let value = headers.get(CONTENT_TYPE).ok_or_else(|| {
        refuse("send the attachment's Content-Type (application/octet-stream if unknown)")
    })?;
    let text = value
        .to_str()
        .map_err(|_| refuse("the Content-Type must be ASCII"))?
        .trim();
    let essence = kait_media::sniff::essence(text);
    let well_formed = text.len() <= MAX_CONTENT_TYPE_BYTES
        && essence.split_once('/').is_some_and(|(kind, subtype)| {
            let token = |part: &str| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&byte))
            };
            token(kind) && token(subtype)
        });
    if !well_formed {
        return Err(refuse(
            "the Content-Type must be a media type (type/subtype)",
        ));
    }
    Ok(text.to_owned())
}

#[utoipa::path(
    post,
    operation_id = "v1.attachment.create",
    path = "/api/v1/app/{app_id}/attachment",
    tag = "attachment",
    summary = "Upload an attachment (streamed; referenced by messages' `attachments`)",
    description = "The body is the blob itself, with its `Content-Type` (checked against the \
        bytes' signature: a mismatch is 415 unless declared `application/octet-stream`). \
        Stored once, hashed (SHA-256) while it streams in, refused past the server's \
        `--max-attachment-bytes` (413). An upload no message references is deleted after \
        24 hours; a referenced one with its last message.",
    params(AppPath, UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 201, body = AttachmentOut),
        (status = 413, body = crate::wire::ErrorOut),
        (status = 415, body = crate::wire::ErrorOut),
        (status = "4XX", body = crate::wire::ErrorOut)
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<ApiState>,
    Path(AppPath { app_id: app_key }): Path<AppPath>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<AttachmentOut>), ApiError> {
    let Some(media) = state.media.clone() else {
        return Err(ApiError::NotFound("attachments on this server"));
    };
    let query = UploadQuery::read(query.as_deref())?;
    let content_type = declared_type(&headers)?;
    let declared_length = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > media.max_upload_bytes) {
        return Err(too_large(media.max_upload_bytes));
    }
    let app_id = state
        .app_ids
        .resolve(state.store.as_ref(), &app_key)
        .await?;
    let id = AttachmentId::generate();
    let stream = body.into_data_stream().boxed();
    let stored = media
        .blobs
        .store(id.as_str(), &content_type, stream, media.max_upload_bytes)
        .await
        .map_err(|error| match error {
            UploadError::TooLarge { limit } => too_large(limit),
            UploadError::Mismatch(mismatch) => ApiError::UnsupportedMediaType(mismatch.to_string()),
            UploadError::Empty => ApiError::invalid("body", "the attachment is empty"),
            UploadError::Body(detail) => ApiError::BadRequest {
                code: "invalid_body",
                detail: format!("the upload was cut off: {detail}"),
            },
            UploadError::Store(error) => ApiError::BlobStore(error.to_string()),
        })?;
    let attachment = Attachment {
        id,
        app_id,
        content_type,
        size: stored.size,
        sha256: stored.sha256,
        filename: query.filename,
        created_at: now_millis(),
    };
    let recorded = match state.store.create_attachment(attachment.clone()).await {
        Ok(recorded) => recorded,
        Err(error) => {
            if let Err(cleanup) = media.blobs.delete(attachment.id.as_str()).await {
                tracing::warn!(%cleanup, id = %attachment.id, "removing an unrecorded blob failed");
            }
            return Err(error.into());
        }
    };
    metrics::counter!("kait_attachment_bytes_uploaded_total").increment(recorded.size);
    Ok((StatusCode::CREATED, Json(AttachmentOut::new(recorded))))
}

fn too_large(limit: u64) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "the attachment is larger than the server's limit of {limit} bytes (--max-attachment-bytes)"
    ))
}

#[utoipa::path(
    get,
    operation_id = "v1.attachment.get",
    path = "/api/v1/app/{app_id}/attachment/{attachment_id}",
    tag = "attachment",
    summary = "Get an attachment's record",
    params(AttachmentPath),
    responses((status = 200, body = AttachmentOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    Path(AttachmentPath {
        app_id: app_key,
        attachment_id,
    }): Path<AttachmentPath>,
) -> Result<Json<AttachmentOut>, ApiError> {
    let app_id = state
        .app_ids
        .resolve(state.store.as_ref(), &app_key)
        .await?;
    let id = AttachmentId::parse(&attachment_id).ok_or(ApiError::NotFound("attachment"))?;
    state
        .store
        .app_attachments(&app_id, &[id])
        .await?
        .pop()
        .map(|attachment| Json(AttachmentOut::new(attachment)))
        .ok_or(ApiError::NotFound("attachment"))
}
