//! `/api/v1/app/{app}/device…`: the devices an application's MQTT routes have seen, with
//! their presence, and commands to them (issue 16; Kait extension).
//!
//! A command is recorded first (queued when the registry says its device is offline, else
//! sent) and then published by the MQTT bridge through [`crate::DeviceLink`]. In `sync` mode
//! the request waits for the device's reply (200) or answers 504 at `timeoutMs`; in `async`
//! mode it answers 202 and the outcome arrives as an event to the application's endpoints:
//! `device.command.replied` or `device.command.timeout`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use kait_core::DeviceCommandId;
use kait_core::time::{now_millis, to_datetime};
use kait_core::validate::{Problem, Problems};
use kait_devices::check_segment;
use kait_store::{CommandStatus, Device, DeviceCommand};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::IntoParams;

use crate::extract::{ListQuery, ValidJson};
use crate::wire::ListResponse;
use crate::{ApiError, ApiState};

use kait_pipe::definition::{
    COMMAND_EXPIRES_IN_MS as EXPIRES_IN_MS, COMMAND_TIMEOUT_MS as TIMEOUT_MS,
    DEFAULT_COMMAND_EXPIRES_IN_MS as DEFAULT_EXPIRES_IN_MS,
    DEFAULT_COMMAND_TIMEOUT_MS as DEFAULT_TIMEOUT_MS,
};

/// A device as the registry knows it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceOut {
    /// The device's id (its topics' `{device}` segment).
    pub device: String,
    pub online: bool,
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
    /// When `online` last changed.
    pub changed_at: chrono::DateTime<chrono::Utc>,
    /// When it goes offline unless heard from (a route's `silenceTimeoutSecs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl DeviceOut {
    fn new(device: Device) -> Self {
        Self {
            device: device.device,
            online: device.online,
            last_seen_at: to_datetime(device.last_seen_at),
            changed_at: to_datetime(device.changed_at),
            silent_at: device.silent_at.map(to_datetime),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CommandMode {
    /// The response is the device's reply, or 504 at the timeout.
    #[default]
    Sync,
    /// 202 at once; the outcome arrives as an event.
    Async,
}

/// A command to a device.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceCommandIn {
    /// The command's name, a topic level (`close`, `reboot`).
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// The JSON published to the device (default `{}`).
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Box<RawValue>>,
    /// How long to wait for the reply once the command is sent: 100 ms to 5 min (10 s).
    #[schema(minimum = 100, maximum = 300000)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub mode: CommandMode,
    /// `async` only: how long a command for an offline device waits for it to come online
    /// before it expires (1 s to 7 days; 1 hour). A `sync` command waits `timeoutMs` in all.
    #[schema(minimum = 1000, maximum = 604800000)]
    pub expires_in_ms: Option<u64>,
}

/// A command and where it stands. Also the payload of `device.command.replied` and
/// `device.command.timeout` events.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCommandOut {
    pub id: String,
    pub device: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    pub mode: CommandMode,
    /// `queued` (waiting for the device), `sent` (waiting for the reply), `replied`,
    /// `timedOut` (no reply in time), `expired` (the device did not come online in time).
    pub status: String,
    pub timeout_ms: u64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// While waiting: when it times out or expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The reply, when the device answered with JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub reply: Option<Box<RawValue>>,
    /// The reply, base64, when it is not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl DeviceCommandOut {
    pub fn new(command: &DeviceCommand) -> Self {
        let json = |text: &str| RawValue::from_string(text.to_owned()).ok();
        let reply_json = command
            .reply
            .as_deref()
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .filter(|text| kait_core::validate::json_depth(text) <= 64)
            .and_then(json);
        let reply_base64 = match (&command.reply, &reply_json) {
            (Some(bytes), None) => Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            _ => None,
        };
        Self {
            id: command.id.as_str().to_owned(),
            device: command.device.clone(),
            name: command.name.clone(),
            payload: json(&command.payload)
                .unwrap_or_else(|| RawValue::from_string("{}".into()).expect("valid JSON")),
            mode: if command.asynchronous {
                CommandMode::Async
            } else {
                CommandMode::Sync
            },
            status: command.status.as_str().to_owned(),
            timeout_ms: command.timeout_ms,
            created_at: to_datetime(command.created_at),
            deadline_at: command
                .status
                .is_waiting()
                .then(|| to_datetime(command.deadline_at)),
            reply: reply_json,
            reply_base64,
            finished_at: command.finished_at.map(to_datetime),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AppPath {
    /// The application's id or uid
    pub app_id: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DevicePath {
    /// The application's id or uid
    pub app_id: String,
    /// The device's id: a topic level (1 to 128 bytes, none of `/ + #`)
    #[param(pattern = "^[^/+#]{1,128}$")]
    pub device: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CommandPath {
    /// The application's id or uid
    pub app_id: String,
    /// The device's id: a topic level (1 to 128 bytes, none of `/ + #`)
    #[param(pattern = "^[^/+#]{1,128}$")]
    pub device: String,
    /// The command's id (`cmd_…`)
    pub command_id: String,
}

fn within(value: u64, range: &std::ops::RangeInclusive<u64>) -> Result<(), String> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "from {} to {} milliseconds",
            range.start(),
            range.end()
        ))
    }
}

fn check_device(device: &str) -> Result<(), ApiError> {
    check_segment("device", device).map_err(|msg| {
        ApiError::Validation(vec![Problem {
            loc: vec!["path".into(), "device".into()],
            msg,
            kind: "value_error",
        }])
    })
}

#[utoipa::path(
    get,
    operation_id = "v1.device.list",
    path = "/api/v1/app/{app_id}/device",
    tag = "device",
    summary = "List an application's devices and their presence (Kait extension)",
    description = "Devices are recorded from the traffic of MQTT routes whose topic has a \
        `{device}` segment: last seen, online or offline (from a presence route's statuses, \
        e.g. a last will, and from a route's `silenceTimeoutSecs`). Ordered by device id.",
    params(AppPath, crate::extract::ListParams),
    responses((status = 200, body = ListResponse<DeviceOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<ApiState>,
    Path(AppPath { app_id: app_key }): Path<AppPath>,
    query: ListQuery,
) -> Result<Json<ListResponse<DeviceOut>>, ApiError> {
    let app_id = state
        .app_ids
        .resolve(state.store.as_ref(), &app_key)
        .await?;
    let page = query.page()?;
    if page.reverse {
        return Err(ApiError::invalid_query(
            "iterator",
            "devices are listed forwards only",
        ));
    }
    let mut devices = state
        .store
        .list_devices(&app_id, page.iterator.as_deref(), page.limit + 1)
        .await?;
    let done = devices.len() <= page.limit;
    devices.truncate(page.limit);
    let data = devices.into_iter().map(DeviceOut::new).collect();
    Ok(Json(ListResponse::new(data, done, |device: &DeviceOut| {
        device.device.clone()
    })))
}

#[utoipa::path(
    get,
    operation_id = "v1.device.get",
    path = "/api/v1/app/{app_id}/device/{device}",
    tag = "device",
    summary = "Get a device's presence (Kait extension)",
    params(DevicePath),
    responses((status = 200, body = DeviceOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    Path(DevicePath {
        app_id: app_key,
        device,
    }): Path<DevicePath>,
) -> Result<Json<DeviceOut>, ApiError> {
    let app_id = state
        .app_ids
        .resolve(state.store.as_ref(), &app_key)
        .await?;
    check_device(&device)?;
    state
        .store
        .get_device(&app_id, &device)
        .await?
        .map(|device| Json(DeviceOut::new(device)))
        .ok_or(ApiError::NotFound("device"))
}

#[utoipa::path(
    post,
    operation_id = "v1.device.command.create",
    path = "/api/v1/app/{app_id}/device/{device}/command",
    tag = "device",
    summary = "Send a command to a device over MQTT (Kait extension)",
    description = "Published at QoS 1 to the server's command topic (`--mqtt-command-topic`, \
        default `devices/{device}/commands/{name}`) with an MQTT 5 response topic \
        (`--mqtt-reply-topic`/`{commandId}`) and the command id as correlation data. The device \
        answers on that topic. `sync`: 200 with the reply, or 504 `device_timeout`. `async`: 202; \
        the outcome is a `device.command.replied` or `device.command.timeout` event. A command \
        for a device the registry knows to be offline waits for it (`expiresInMs`).",
    params(DevicePath),
    request_body = DeviceCommandIn,
    responses(
        (status = 200, description = "The device replied (sync)", body = DeviceCommandOut),
        (status = 202, description = "Recorded and sent or queued (async)", body = DeviceCommandOut),
        (status = 504, description = "No reply in time (sync)", body = crate::wire::ErrorOut),
        (status = "4XX", body = crate::wire::ErrorOut)
    ),
    security(("bearer" = []))
)]
pub async fn create_command(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    Path(DevicePath {
        app_id: app_key,
        device,
    }): Path<DevicePath>,
    ValidJson(input): ValidJson<DeviceCommandIn>,
) -> Result<Response, ApiError> {
    check_device(&device)?;
    caller.allows_name(kait_core::scope::ScopeKind::DevicesCommand, &device)?;
    let link = state.devices.clone().ok_or(ApiError::NotConfigured(
        "device commands need an MQTT broker: start the server with --mqtt-url",
    ))?;
    let app = state
        .store
        .get_application(&app_key)
        .await?
        .ok_or(ApiError::NotFound("application"))?;
    let mut problems = Problems::new();
    problems.check("name", check_segment("name", &input.name));
    let timeout_ms = input.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    problems.check("timeoutMs", within(timeout_ms, &TIMEOUT_MS));
    let asynchronous = input.mode == CommandMode::Async;
    let expires_in_ms = input.expires_in_ms.unwrap_or(DEFAULT_EXPIRES_IN_MS);
    if input.expires_in_ms.is_some() && !asynchronous {
        problems.check(
            "expiresInMs",
            Err("only for async commands (a sync command waits timeoutMs in all)".into()),
        );
    }
    problems.check("expiresInMs", within(expires_in_ms, &EXPIRES_IN_MS));
    problems.into_result()?;
    let command = DeviceCommand {
        id: DeviceCommandId::generate(),
        app_id: app.id.clone(),
        device: device.clone(),
        name: input.name,
        payload: input
            .payload
            .map_or_else(|| "{}".to_owned(), |payload| payload.get().to_owned()),
        asynchronous,
        status: CommandStatus::Sent,
        timeout_ms,
        created_at: now_millis(),
        deadline_at: 0,
        reply: None,
        finished_at: None,
    };
    let app_key = app
        .uid
        .clone()
        .unwrap_or_else(|| app.id.as_str().to_owned());
    let reply = (!asynchronous).then(|| link.wait_for_reply(&command.id));
    // A synchronous command waits timeoutMs in all, for its device too.
    let expires_in_ms = if asynchronous {
        expires_in_ms
    } else {
        timeout_ms
    };
    metrics::counter!("kait_device_commands_total", "mode" => if asynchronous { "async" } else { "sync" })
        .increment(1);
    let command = match link
        .send_command(&app_key, command.clone(), expires_in_ms)
        .await
    {
        Ok(sent) => sent,
        Err(error) => {
            link.forget(&command.id);
            tracing::warn!(%error, "sending a device command failed");
            return Err(ApiError::Unavailable);
        }
    };
    let Some(reply) = reply else {
        return Ok((StatusCode::ACCEPTED, Json(DeviceCommandOut::new(&command))).into_response());
    };
    let wait = std::time::Duration::from_millis(timeout_ms);
    let answered = tokio::select! {
        answered = tokio::time::timeout(wait, reply) => answered.ok().and_then(Result::ok),
        () = state.shutdown.cancelled() => None,
    };
    link.forget(&command.id);
    if let Some(replied) = answered {
        return Ok(Json(DeviceCommandOut::new(&replied)).into_response());
    }
    // Too late: the command ends here (a sync command nobody waits for is not sent later),
    // unless the reply won the race.
    let current = state.store.get_device_command(&command.id).await?;
    let ended = match current.as_ref().map(|current| current.status) {
        // Still queued, or expired queued by the sweeper: the device never came online.
        Some(CommandStatus::Queued | CommandStatus::Expired) => CommandStatus::Expired,
        _ => CommandStatus::TimedOut,
    };
    if state
        .store
        .finish_device_command(&command.id, ended, None, now_millis())
        .await?
        .is_none()
        && let Some(finished) = state.store.get_device_command(&command.id).await?
        && finished.status == CommandStatus::Replied
    {
        return Ok(Json(DeviceCommandOut::new(&finished)).into_response());
    }
    Err(ApiError::DeviceTimeout(format!(
        "device `{device}` did not {} within {timeout_ms} ms (command {})",
        if ended == CommandStatus::Expired {
            "come online"
        } else {
            "reply"
        },
        command.id
    )))
}

#[utoipa::path(
    get,
    operation_id = "v1.device.command.get",
    path = "/api/v1/app/{app_id}/device/{device}/command/{command_id}",
    tag = "device",
    summary = "Get a command and its reply (Kait extension)",
    params(CommandPath),
    responses((status = 200, body = DeviceCommandOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get_command(
    State(state): State<ApiState>,
    Path(CommandPath {
        app_id: app_key,
        device,
        command_id,
    }): Path<CommandPath>,
) -> Result<Json<DeviceCommandOut>, ApiError> {
    let app_id = state
        .app_ids
        .resolve(state.store.as_ref(), &app_key)
        .await?;
    let id = DeviceCommandId::parse(&command_id).ok_or(ApiError::NotFound("command"))?;
    state
        .store
        .get_device_command(&id)
        .await?
        .filter(|command| command.app_id == app_id && command.device == device)
        .map(|command| Json(DeviceCommandOut::new(&command)))
        .ok_or(ApiError::NotFound("command"))
}
