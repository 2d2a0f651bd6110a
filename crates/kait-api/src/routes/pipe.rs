//! `/api/v1/pipe` (Kait extension): pipes, rules that act on events — filter, transform,
//! emit, delay, "expect B within T" (see the `kait-pipe` crate).
//!
//! A pipe subscribes to the events of each application its trigger names (the app, or each
//! source's own application) through an endpoint of kind `pipe` there, which these routes
//! make, keep in step (its event types are the trigger's and those the pipe's `expect`s
//! await) and delete with it; the endpoint routes do not show it. Every expression
//! is compiled before the pipe is saved, so a typo is a 422, not a failed run later.

use axum::Extension;

use crate::auth::Caller;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kait_core::signing::Secret;
use kait_core::time::{now_millis, to_datetime};
use kait_core::validate::{self, Problem};
use kait_core::{AppId, Application, DeliveryOrder, Endpoint, EndpointKind, PipeId};
use kait_pipe::Definition;
use kait_pipe::definition::ForwardTarget;
use kait_script::{Entry, Limits, MAX_CODE_BYTES, Script};
use kait_store::Pipe;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{retry_stale, transformation::in_sandbox};
use crate::extract::{ListQuery, ValidJson};
use crate::wire::{
    ListResponse, PipeIn, PipeOut, PipePatch, PipeRunOut, PipeStatsOut, PipeTrigger,
};
use crate::{ApiError, ApiState};

/// `/api/v1/pipe/{pipe_id}`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PipePath {
    /// The pipe id (`pipe_…`) or uid
    pub pipe_id: String,
}

/// A definition's problem as a 422 at its place in the body.
fn definition_problem(path: &str, message: String) -> ApiError {
    let mut loc = vec!["body".to_owned()];
    loc.extend(
        path.split(['.', '['])
            .filter(|part| !part.is_empty())
            .map(|part| part.trim_end_matches(']').to_owned()),
    );
    ApiError::Validation(vec![Problem {
        loc,
        msg: message,
        kind: "value_error",
    }])
}

/// The definition the store keeps, read and checked, every expression compiled.
async fn definition(
    trigger: &PipeTrigger,
    transform: Option<&String>,
    actions: &[serde_json::Value],
) -> Result<(serde_json::Value, Definition), ApiError> {
    let mut value = serde_json::json!({ "trigger": trigger, "actions": actions });
    if let Some(transform) = transform {
        value["transform"] = serde_json::Value::String(transform.clone());
    }
    let definition = Definition::parse(&value)
        .map_err(|error| definition_problem(&error.path, error.message))?;
    let expressions: Vec<(String, String)> = definition
        .expressions()
        .into_iter()
        .map(|(path, code)| (path, code.to_owned()))
        .collect();
    for (path, code) in &expressions {
        if code.len() > MAX_CODE_BYTES {
            return Err(definition_problem(
                path,
                format!("the code is longer than {MAX_CODE_BYTES} bytes"),
            ));
        }
    }
    let compiled = in_sandbox(move || {
        expressions.into_iter().find_map(|(path, code)| {
            Script::compile(&code, Entry::Expression, Limits::default())
                .err()
                .map(|error| (path, error.to_string()))
        })
    })
    .await?;
    if let Some((path, error)) = compiled {
        return Err(definition_problem(&path, error));
    }
    Ok((value, definition))
}

/// The applications a trigger names, in order: the app, or each source's own application.
async fn trigger_apps(state: &ApiState, definition: &Definition) -> Result<Vec<AppId>, ApiError> {
    if let Some(app) = &definition.trigger.app {
        return Ok(vec![super::find_app(state, app).await?.id]);
    }
    let mut apps = Vec::new();
    for source in definition.trigger.all_sources() {
        let source = super::ingest_source::find(state, source).await?;
        let app = super::ingest_source::source_app(state, &source.id)
            .await?
            .id;
        if !apps.contains(&app) {
            apps.push(app);
        }
    }
    Ok(apps)
}

/// Makes the pipe's subscriptions match its trigger: in each application, one endpoint of
/// kind `pipe` taking the event types the pipe must see (its trigger's and those its
/// `expect`s await); those in applications it no longer names are deleted. Returns the one
/// in the first application.
async fn sync_subscriptions(
    state: &ApiState,
    pipe_id: &PipeId,
    name: &str,
    definition: &Definition,
    apps: &[AppId],
) -> Result<Endpoint, ApiError> {
    let url = kait_pipe::endpoint_url(pipe_id);
    let existing = state.store.pipe_endpoints(&url).await?;
    let event_types = definition.event_types();
    let now = now_millis();
    let mut first = None;
    for app_id in apps {
        let endpoint = match existing.iter().find(|endpoint| &endpoint.app_id == app_id) {
            Some(endpoint) if endpoint.event_types.as_ref() == Some(&event_types) => {
                endpoint.clone()
            }
            // A stale write makes the caller's `retry_stale` read everything again.
            Some(endpoint) => {
                state
                    .store
                    .update_endpoint(Endpoint {
                        event_types: Some(event_types.clone()),
                        updated_at: now,
                        ..endpoint.clone()
                    })
                    .await?
            }
            None => {
                state
                    .store
                    .create_endpoint(
                        Endpoint {
                            description: format!("pipe {name}"),
                            event_types: Some(event_types.clone()),
                            // In order per message `orderingKey`, and all in order for
                            // messages without one: a wait's restart or end must see the
                            // events as they came.
                            ordering: DeliveryOrder::Key,
                            kind: EndpointKind::Pipe,
                            ..Endpoint::new(app_id.clone(), url.clone(), Secret::generate(), now)
                        },
                        u32::MAX as usize,
                    )
                    .await?
            }
        };
        first.get_or_insert(endpoint);
    }
    for endpoint in existing
        .iter()
        .filter(|endpoint| !apps.contains(&endpoint.app_id))
    {
        delete_subscription(state, endpoint).await?;
    }
    first.ok_or_else(|| ApiError::invalid("trigger", "the trigger names no application"))
}

async fn delete_subscription(state: &ApiState, endpoint: &Endpoint) -> Result<(), ApiError> {
    match state
        .store
        .delete_endpoint(&endpoint.app_id, &endpoint.id)
        .await
    {
        Ok(()) | Err(kait_store::StoreError::NotFound) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Deletes every subscription of the pipe.
async fn delete_subscriptions(state: &ApiState, pipe_id: &PipeId) -> Result<(), ApiError> {
    let url = kait_pipe::endpoint_url(pipe_id);
    for endpoint in state.store.pipe_endpoints(&url).await? {
        delete_subscription(state, &endpoint).await?;
    }
    Ok(())
}

fn out(pipe: &Pipe) -> PipeOut {
    let definition = &pipe.definition;
    PipeOut {
        id: pipe.id.to_string(),
        uid: pipe.uid.clone(),
        name: pipe.name.clone(),
        app_id: pipe.app_id.to_string(),
        enabled: pipe.enabled,
        trigger: serde_json::from_value(definition["trigger"].clone()).unwrap_or(PipeTrigger {
            app: None,
            source: None,
            sources: Vec::new(),
            event_types: Default::default(),
            filter: None,
        }),
        transform: definition["transform"].as_str().map(str::to_owned),
        actions: definition["actions"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        created_at: to_datetime(pipe.created_at),
        updated_at: to_datetime(pipe.updated_at),
    }
}

async fn find(state: &ApiState, key: &str) -> Result<Pipe, ApiError> {
    state
        .store
        .get_pipe(key)
        .await?
        .ok_or(ApiError::NotFound("pipe"))
}

fn check_names(name: Option<&String>, uid: Option<&String>) -> Result<(), ApiError> {
    if let Some(name) = name {
        validate::name(name).map_err(|problem| ApiError::invalid("name", problem))?;
    }
    if let Some(uid) = uid {
        validate::uid(uid).map_err(|problem| ApiError::invalid("uid", problem))?;
    }
    Ok(())
}

#[utoipa::path(
    get,
    operation_id = "v1.pipe.list",
    path = "/api/v1/pipe",
    tag = "pipe",
    summary = "List pipes (Kait extension)",
    params(crate::extract::ListParams),
    responses((status = 200, body = ListResponse<PipeOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    query: ListQuery,
) -> Result<Json<ListResponse<PipeOut>>, ApiError> {
    let page = state.store.list_pipes(query.page()?).await?;
    let mut response = ListResponse::new(
        page.items.iter().map(out).collect(),
        page.done,
        |pipe: &PipeOut| pipe.id.clone(),
    );
    // A plugin sees its application's pipes; the page's iterators stay the store's, so a
    // page filtered down to nothing still leads on.
    if let Some(app_id) = caller.confined_to() {
        response.data.retain(|pipe| pipe.app_id == app_id.as_str());
    }
    Ok(Json(response))
}

/// The pipe, if the caller may see it (a plugin: only its application's; 404 otherwise).
async fn find_for(state: &ApiState, caller: &Caller, key: &str) -> Result<Pipe, ApiError> {
    let pipe = find(state, key).await?;
    match caller.confined_to() {
        Some(app_id) if *app_id != pipe.app_id => Err(ApiError::NotFound("pipe")),
        _ => Ok(pipe),
    }
}

#[utoipa::path(
    post,
    operation_id = "v1.pipe.create",
    path = "/api/v1/pipe",
    tag = "pipe",
    summary = "Create a pipe (Kait extension)",
    description = "A pipe runs on each event its trigger names: the filter, the transform, then \
        its actions in order. Waits (`delay`, `expect`) are kept in the store and survive \
        restarts; each run is recorded (`GET /api/v1/pipe/{pipe_id}/run`).",
    request_body = PipeIn,
    responses((status = 201, body = PipeOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<ApiState>,
    ValidJson(input): ValidJson<PipeIn>,
) -> Result<impl IntoResponse, ApiError> {
    check_names(Some(&input.name), input.uid.as_ref())?;
    let (value, definition) =
        definition(&input.trigger, input.transform.as_ref(), &input.actions).await?;
    let apps = trigger_apps(&state, &definition).await?;
    check_forward_targets(&state, &definition).await?;
    let id = PipeId::generate();
    let now = now_millis();
    let subscription = sync_subscriptions(&state, &id, &input.name, &definition, &apps).await?;
    let pipe = Pipe {
        id,
        uid: input.uid,
        name: input.name,
        app_id: subscription.app_id,
        endpoint_id: subscription.id,
        definition: value,
        enabled: input.enabled.unwrap_or(true),
        created_at: now,
        updated_at: now,
        revision: 0,
    };
    let pipe_id = pipe.id.clone();
    match state.store.create_pipe(pipe).await {
        Ok(created) => {
            sync_forwards(&state, &created.id, &created.name, &definition).await?;
            Ok((StatusCode::CREATED, Json(out(&created))))
        }
        Err(error) => {
            // Not left subscribed without its pipe (a taken uid, say).
            let _ = delete_subscriptions(&state, &pipe_id).await;
            Err(error.into())
        }
    }
}

#[utoipa::path(
    get,
    operation_id = "v1.pipe.get",
    path = "/api/v1/pipe/{pipe_id}",
    tag = "pipe",
    summary = "Get a pipe (Kait extension)",
    params(PipePath),
    responses((status = 200, body = PipeOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(PipePath { pipe_id }): Path<PipePath>,
) -> Result<Json<PipeOut>, ApiError> {
    Ok(Json(out(&find_for(&state, &caller, &pipe_id).await?)))
}

#[utoipa::path(
    patch,
    operation_id = "v1.pipe.patch",
    path = "/api/v1/pipe/{pipe_id}",
    tag = "pipe",
    summary = "Change a pipe (Kait extension)",
    description = "Fields left out are kept. The trigger's app cannot change, a pipe on \
        sources may name other sources (make a new pipe to move between the two); waits \
        already written keep their time and continue with the new actions \
        where the same step still exists.",
    params(PipePath),
    request_body = PipePatch,
    responses((status = 200, body = PipeOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<ApiState>,
    Path(PipePath { pipe_id }): Path<PipePath>,
    ValidJson(input): ValidJson<PipePatch>,
) -> Result<Json<PipeOut>, ApiError> {
    check_names(
        input.name.as_ref(),
        input.uid.as_ref().and_then(Option::as_ref),
    )?;
    let updated = retry_stale(|| async {
        let existing = find(&state, &pipe_id).await?;
        let current = out(&existing);
        let trigger = input.trigger.clone().unwrap_or(current.trigger.clone());
        if trigger.app != current.trigger.app {
            return Err(ApiError::invalid(
                "trigger",
                "the app of a pipe cannot change, nor a pipe on sources move to an app; \
                 make a new pipe",
            ));
        }
        let transform = match &input.transform {
            Some(transform) => transform.clone(),
            None => current.transform.clone(),
        };
        let actions = input.actions.clone().unwrap_or(current.actions.clone());
        let (value, definition) = definition(&trigger, transform.as_ref(), &actions).await?;
        let apps = trigger_apps(&state, &definition).await?;
        check_forward_targets(&state, &definition).await?;
        let now = now_millis();
        let subscription =
            sync_subscriptions(&state, &existing.id, &existing.name, &definition, &apps).await?;
        sync_forwards(&state, &existing.id, &existing.name, &definition).await?;
        Ok(state
            .store
            .update_pipe(Pipe {
                app_id: subscription.app_id,
                endpoint_id: subscription.id,
                name: input.name.clone().unwrap_or(existing.name.clone()),
                uid: match &input.uid {
                    Some(uid) => uid.clone(),
                    None => existing.uid.clone(),
                },
                enabled: input.enabled.unwrap_or(existing.enabled),
                definition: value,
                updated_at: now,
                ..existing
            })
            .await?)
    })
    .await?;
    Ok(Json(out(&updated)))
}

#[utoipa::path(
    delete,
    operation_id = "v1.pipe.delete",
    path = "/api/v1/pipe/{pipe_id}",
    tag = "pipe",
    summary = "Delete a pipe, its waits and its runs (Kait extension)",
    params(PipePath),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    Path(PipePath { pipe_id }): Path<PipePath>,
) -> Result<StatusCode, ApiError> {
    let pipe = find(&state, &pipe_id).await?;
    state.store.delete_pipe(&pipe.id).await?;
    let forwarding = kait_pipe::definition::forward_app_uid(&pipe.id);
    if let Some(application) = state.store.get_application(&forwarding).await? {
        state.store.delete_application(&application.id).await?;
    }
    delete_subscriptions(&state, &pipe.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    operation_id = "v1.pipe.list-runs",
    path = "/api/v1/pipe/{pipe_id}/run",
    tag = "pipe",
    summary = "List a pipe's runs, newest first (Kait extension)",
    params(PipePath, crate::extract::ListParams),
    responses((status = 200, body = ListResponse<PipeRunOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list_runs(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(PipePath { pipe_id }): Path<PipePath>,
    query: ListQuery,
) -> Result<Json<ListResponse<PipeRunOut>>, ApiError> {
    let pipe = find_for(&state, &caller, &pipe_id).await?;
    let page = state.store.list_pipe_runs(&pipe.id, query.page()?).await?;
    let data = page
        .items
        .into_iter()
        .map(|run| PipeRunOut {
            id: run.id.to_string(),
            origin: run.origin,
            timestamp: to_datetime(run.at),
            outcome: run.outcome,
            detail: run.detail,
        })
        .collect();
    Ok(Json(ListResponse::new(
        data,
        page.done,
        |run: &PipeRunOut| run.id.clone(),
    )))
}

#[utoipa::path(
    get,
    operation_id = "v1.pipe.stats",
    path = "/api/v1/pipe/{pipe_id}/stats",
    tag = "pipe",
    summary = "A pipe's waits (Kait extension)",
    params(PipePath),
    responses((status = 200, body = PipeStatsOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn stats(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(PipePath { pipe_id }): Path<PipePath>,
) -> Result<Json<PipeStatsOut>, ApiError> {
    let pipe = find_for(&state, &caller, &pipe_id).await?;
    Ok(Json(PipeStatsOut {
        waiting: state.store.count_timers(Some(&pipe.id)).await?,
    }))
}

/// Each `forward` URL must pass the egress guard, and each source endpoint must exist (a 422
/// at the action otherwise).
async fn check_forward_targets(state: &ApiState, definition: &Definition) -> Result<(), ApiError> {
    check_forward_urls(state, definition)?;
    for (path, target) in definition.forwards() {
        let ForwardTarget::SourceEndpoint { source, endpoint } = target else {
            continue;
        };
        let at = format!("actions.{}", path.replace('/', "."));
        let Some(found) = state.store.get_source(source).await? else {
            return Err(definition_problem(
                &format!("{at}.source"),
                format!("no source {source:?}"),
            ));
        };
        let application = super::ingest_source::source_app(state, &found.id).await?;
        let usable = state
            .store
            .get_endpoint(&application.id, endpoint)
            .await?
            .is_some_and(|found| found.kind != EndpointKind::Pipe);
        if !usable {
            return Err(definition_problem(
                &format!("{at}.endpoint"),
                format!("source {source:?} has no endpoint {endpoint:?}"),
            ));
        }
    }
    Ok(())
}

/// Each `forward` URL must pass the egress guard (a 422 at the action otherwise).
fn check_forward_urls(state: &ApiState, definition: &Definition) -> Result<(), ApiError> {
    for (path, target) in definition.forwards() {
        let ForwardTarget::Url(url) = target else {
            continue;
        };
        (state.url_check)(url).map_err(|problem| {
            definition_problem(&format!("actions.{}.url", path.replace('/', ".")), problem)
        })?;
    }
    Ok(())
}

/// Makes the pipe's forwarding endpoints match its `forward` actions: one endpoint per
/// action (uid `forward-{path}`, taking only its own channel) in the pipe's own application,
/// created, re-pointed or deleted as the actions are. Each URL passes the egress guard first.
async fn sync_forwards(
    state: &ApiState,
    pipe_id: &PipeId,
    name: &str,
    definition: &Definition,
) -> Result<(), ApiError> {
    check_forward_urls(state, definition)?;
    let forwards = definition.forwards();
    let any_url = forwards
        .iter()
        .any(|(_, target)| matches!(target, ForwardTarget::Url(_)));
    let app_uid = kait_pipe::definition::forward_app_uid(pipe_id);
    let application = match state.store.get_application(&app_uid).await? {
        Some(application) => application,
        None if !any_url => return Ok(()),
        None => {
            let now = now_millis();
            match state
                .store
                .create_application(Application {
                    id: AppId::generate(),
                    uid: Some(app_uid.clone()),
                    name: format!("pipe {name}"),
                    rate_limit: None,
                    metadata: Default::default(),
                    created_at: now,
                    updated_at: now,
                    revision: 0,
                })
                .await
            {
                Ok(application) => application,
                Err(kait_store::StoreError::Conflict(_)) => state
                    .store
                    .get_application(&app_uid)
                    .await?
                    .ok_or(ApiError::NotFound("application"))?,
                Err(error) => return Err(error.into()),
            }
        }
    };
    let wanted: std::collections::BTreeMap<String, String> = forwards
        .iter()
        .filter_map(|(path, target)| match target {
            ForwardTarget::Url(url) => {
                Some((kait_pipe::definition::forward_name(path), url.to_string()))
            }
            ForwardTarget::SourceEndpoint { .. } => None,
        })
        .collect();
    let existing = state
        .store
        .list_endpoints(
            &application.id,
            kait_store::PageRequest {
                limit: 1000,
                ..Default::default()
            },
        )
        .await?
        .items;
    for endpoint in &existing {
        let keep = endpoint.uid.as_ref().and_then(|uid| wanted.get(uid));
        match keep {
            None => match state
                .store
                .delete_endpoint(&application.id, &endpoint.id)
                .await
            {
                Ok(()) | Err(kait_store::StoreError::NotFound) => {}
                Err(error) => return Err(error.into()),
            },
            Some(url) if url != &endpoint.url => {
                retry_stale(|| async {
                    let current = state
                        .store
                        .get_endpoint_by_id(&endpoint.id)
                        .await?
                        .ok_or(ApiError::NotFound("endpoint"))?;
                    state
                        .store
                        .update_endpoint(Endpoint {
                            url: url.clone(),
                            updated_at: now_millis(),
                            ..current
                        })
                        .await?;
                    Ok(())
                })
                .await?;
            }
            Some(_) => {}
        }
    }
    for (uid, url) in &wanted {
        if existing
            .iter()
            .any(|endpoint| endpoint.uid.as_ref() == Some(uid))
        {
            continue;
        }
        let now = now_millis();
        state
            .store
            .create_endpoint(
                Endpoint {
                    uid: Some(uid.clone()),
                    description: format!("pipe {name}: {uid}"),
                    channels: Some(std::iter::once(uid.clone()).collect()),
                    ..Endpoint::new(application.id.clone(), url.clone(), Secret::generate(), now)
                },
                state.limits.max_endpoints_per_app,
            )
            .await?;
    }
    Ok(())
}
