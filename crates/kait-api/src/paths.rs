//! The path parameters most routes share, declared once: a handler extracts them
//! (`Path(EndpointPath { app_id, endpoint_id })`) and the OpenAPI document describes them
//! (`params(EndpointPath)`) from the same type.

use serde::Deserialize;
use utoipa::IntoParams;

/// `/api/v1/app/{app_id}/…`
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AppPath {
    /// The application id (`app_…`) or uid
    pub app_id: String,
}

/// `/api/v1/app/{app_id}/endpoint/{endpoint_id}/…`
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EndpointPath {
    /// The application id (`app_…`) or uid
    pub app_id: String,
    /// The endpoint id (`ep_…`) or uid
    pub endpoint_id: String,
}
