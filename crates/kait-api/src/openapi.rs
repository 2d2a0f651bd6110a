//! The OpenAPI 3 document: its frame (title, licence, the bearer scheme) lives here; every
//! path comes from the handlers' `#[utoipa::path]`, collected by the router itself
//! (`routes::protected`), so a route cannot exist without being documented.

use std::sync::{Arc, OnceLock};

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, LicenseBuilder, OpenApi, OpenApiBuilder};

/// Everything but the paths.
pub fn base() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Kait")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Webhooks for IoT and multimedia systems; wire-compatible with the Svix v1 API. \
                     Every route but /api/v1/health takes `Authorization: Bearer <token>`.",
                ))
                .license(Some(
                    LicenseBuilder::new()
                        .name("MIT OR Apache-2.0")
                        .identifier(Some("MIT OR Apache-2.0"))
                        .build(),
                ))
                .build(),
        )
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(
                    "bearer",
                    SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
                )
                .security_scheme(
                    "installationToken",
                    SecurityScheme::Http(
                        HttpBuilder::new()
                            .scheme(HttpAuthScheme::Bearer)
                            .description(Some(
                                "A plugin's installation token (`plit_…`): an operation \
                                 listing this scheme is open to it with the scope named",
                            ))
                            .build(),
                    ),
                )
                .security_scheme(
                    "pluginCredential",
                    SecurityScheme::Http(
                        HttpBuilder::new()
                            .scheme(HttpAuthScheme::Bearer)
                            .description(Some("A plugin's own credential (`plsk_…`)"))
                            .build(),
                    ),
                )
                .build(),
        ))
        .build()
}

/// Adds to every operation that plugins may call the alternative `installationToken` with
/// the scope it needs, from [`crate::auth::scope_for`] (the one place that decides it).
pub fn declare_scopes(document: &mut OpenApi) {
    use axum::http::Method;
    use utoipa::openapi::security::SecurityRequirement;
    for (path, item) in document.paths.paths.iter_mut() {
        for (method, operation) in [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::PATCH, &mut item.patch),
            (Method::DELETE, &mut item.delete),
        ] {
            let (Some(operation), Some(scope)) =
                (operation.as_mut(), crate::auth::scope_for(&method, path))
            else {
                continue;
            };
            operation
                .security
                .get_or_insert_with(Vec::new)
                .push(SecurityRequirement::new(
                    "installationToken",
                    [scope.as_str()],
                ));
        }
    }
}

/// `GET /api/v1/openapi.json`: the document, built once.
#[utoipa::path(
    get,
    operation_id = "v1.health.openapi-json",
    path = "/api/v1/openapi.json",
    tag = "health",
    summary = "This OpenAPI document (no token)",
    responses((status = 200, content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> impl IntoResponse {
    static DOCUMENT: OnceLock<Arc<str>> = OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        crate::openapi_document()
            .to_json()
            .expect("the OpenAPI document serializes")
            .into()
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
}
