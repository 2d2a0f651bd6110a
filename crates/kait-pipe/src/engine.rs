//! Runs pipes: on an event (a delivery to the pipe's endpoint, through the dispatcher) and
//! when one of their timers fires (through the timer runner).
//!
//! Nothing here waits in memory: a `delay` or an `expect` writes a timer with what to do
//! next, and the run ends. Every effect can be repeated safely, because a failed run is run
//! again (by the delivery's retry, or the timer's lease running out): `emit` gives its
//! message an event id derived from the run and the action (a repeat is refused by the
//! store as a duplicate), a timer's id is derived the same way (a repeat keeps the first),
//! and an `expect`'s wait is keyed by pipe, action and key (a repeat restarts or keeps it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kait_core::time::{Millis, now_millis, to_datetime};
use kait_core::{AppId, DeviceCommandId, Message, MessageId, PipeId, PipeRunId};
use kait_dispatch::PipeRunner;
use kait_script::{Call, Entry, ScriptPool};
use kait_store::{
    ClaimedDelivery, CommandStatus, DeviceCommand, IfScheduled, NewMessage, Pipe, PipeRun, Store,
    StoreError, Timer,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::definition::{
    Action, Branch, Definition, ForwardTarget, ListAddress, forward_app_uid, forward_name,
    path_text,
};

/// The message a `forward` sends: the (transformed) event, with an event id derived from the
/// run and the action, so a repeated run forwards once.
fn forwarded(pipe_id: &PipeId, origin: &str, at: &str, event: &Value, app_id: AppId) -> Message {
    Message {
        id: MessageId::generate(),
        app_id,
        event_type: event["eventType"]
            .as_str()
            .unwrap_or("pipe.forward")
            .to_owned(),
        event_id: Some(derived_id("pipe", &[pipe_id.as_str(), origin, at])),
        channels: None,
        ordering_key: None,
        payload: event["payload"].to_string(),
        raw: None,
        created_at: now_millis(),
        attachments: Vec::new(),
        deliver_at: None,
    }
}

/// The URL of a pipe's endpoint (an endpoint of kind `pipe`).
pub fn endpoint_url(pipe_id: &PipeId) -> String {
    format!("kait:pipe/{pipe_id}")
}

fn pipe_id_of(url: &str) -> Option<PipeId> {
    url.strip_prefix("kait:pipe/")
        .filter(|id| PipeId::has_prefix(id))
        .map(|id| PipeId::from_trusted(id.to_owned()))
}

/// What a timer does when it fires.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TimerState {
    /// The list of actions to continue in, and from which one.
    list: ListAddress,
    next: usize,
    /// The event the run was about (its payload transformed), as expressions see it.
    event: Value,
}

/// A pipe and its definition, read once per configuration change.
struct Loaded {
    pipe: Pipe,
    definition: Definition,
}

pub struct Engine {
    store: Arc<dyn Store>,
    scripts: ScriptPool,
    /// Woken when a timer is written, so the runner can move its next wake-up earlier.
    timers_changed: Arc<Notify>,
    cache: Mutex<PipeCache>,
    /// The MQTT bridge, for `publish` (`None` without `--mqtt-url`).
    devices: Option<Arc<dyn crate::DeviceCommands>>,
}

/// Pipes as last read, with the config epoch they were read at (`None`: deleted).
type PipeCache = HashMap<PipeId, (u64, Option<Arc<Loaded>>)>;

/// One step's outcome, for the run's record.
fn step(at: &str, action: &str, outcome: impl Into<String>) -> Value {
    json!({ "at": at, "action": action, "outcome": outcome.into() })
}

/// A `publish` action's fields.
struct Publish<'a> {
    app: &'a str,
    device: &'a str,
    name: &'a str,
    payload: &'a Option<String>,
    timeout_ms: Option<u64>,
    expires_in_ms: Option<u64>,
}

/// A short stable id for what a run does at one place (bounded whatever the key's length).
fn derived_id(kind: &str, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    format!("{kind}-{}", &hex::encode(hasher.finalize())[..32])
}

/// A key from an expression's result: strings as they are, anything else as JSON.
fn key_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, scripts: ScriptPool, timers_changed: Arc<Notify>) -> Self {
        Self {
            store,
            scripts,
            timers_changed,
            cache: Mutex::new(HashMap::new()),
            devices: None,
        }
    }

    /// The engine with the MQTT bridge for `publish` actions.
    pub fn with_devices(mut self, devices: Option<Arc<dyn crate::DeviceCommands>>) -> Self {
        self.devices = devices;
        self
    }

    async fn load(&self, id: &PipeId) -> Result<Option<Arc<Loaded>>, String> {
        let epoch = self.store.config_epoch();
        if let Some((cached_epoch, loaded)) = self.cache.lock().expect("pipe cache").get(id)
            && *cached_epoch == epoch
        {
            return Ok(loaded.clone());
        }
        let pipe = self
            .store
            .get_pipe(id.as_str())
            .await
            .map_err(|error| format!("the pipe could not be read: {error}"))?;
        let loaded = match pipe {
            Some(pipe) => {
                let definition = Definition::parse(&pipe.definition)
                    .map_err(|error| format!("the stored pipe is unreadable: {error}"))?;
                Some(Arc::new(Loaded { pipe, definition }))
            }
            None => None,
        };
        self.cache
            .lock()
            .expect("pipe cache")
            .insert(id.clone(), (epoch, loaded.clone()));
        Ok(loaded)
    }

    /// Runs an expression (`e => …`) of the pipe on the event; the result as JSON.
    async fn eval(
        &self,
        pipe: &PipeId,
        at: &str,
        code: &str,
        event: &Value,
    ) -> Result<Value, String> {
        let result = self
            .scripts
            .call(Call {
                owner: format!("{pipe}:{at}"),
                code: Arc::from(code),
                entry: Entry::Expression,
                argument: event.to_string(),
            })
            .await
            .map_err(|error| format!("{at}: {error}"))?;
        serde_json::from_str(&result).map_err(|error| format!("{at}: unreadable result: {error}"))
    }

    /// Writes the run's record without waiting for it: the record is a log (like the attempt
    /// log, it may miss the last runs before a crash), and waiting would add a commit to every
    /// run.
    fn record(&self, pipe_id: &PipeId, origin: &str, outcome: &str, steps: Vec<Value>) {
        let run = PipeRun {
            id: PipeRunId::generate(),
            pipe_id: pipe_id.clone(),
            origin: origin.to_owned(),
            at: now_millis(),
            outcome: outcome.to_owned(),
            detail: json!({ "steps": steps }),
        };
        let store = self.store.clone();
        tokio::spawn(async move {
            let pipe_id = run.pipe_id.clone();
            if let Err(error) = store.record_pipe_run(run).await {
                tracing::warn!(%error, %pipe_id, "a pipe run could not be recorded");
            }
        });
    }

    /// Runs a pipe on one event. `Err` is retried by the delivery queue.
    pub async fn on_event(
        &self,
        pipe_id: &PipeId,
        delivery: &ClaimedDelivery,
    ) -> Result<String, String> {
        let Some(loaded) = self.load(pipe_id).await? else {
            return Ok("the pipe was deleted".into());
        };
        if !loaded.pipe.enabled {
            return Ok("the pipe is disabled".into());
        }
        let payload: Value = serde_json::from_str(&delivery.payload)
            .map_err(|error| format!("the event's payload is not JSON: {error}"))?;
        let event = json!({
            "id": delivery.msg_id.as_str(),
            "eventType": &*delivery.event_type,
            "appId": delivery.app_id.as_str(),
            "timestamp": to_datetime(delivery.created_at)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "payload": payload,
        });
        let origin = delivery.msg_id.as_str();
        let mut steps = Vec::new();
        let result = self.run_event(&loaded, &event, origin, &mut steps).await;
        let outcome = match &result {
            Ok(true) => "done",
            Ok(false) => "filtered",
            Err(_) => "failed",
        };
        if let Err(reason) = &result {
            steps.push(json!({ "error": reason }));
        }
        self.record(pipe_id, origin, outcome, steps);
        result.map(|_| format!("pipe run {outcome}"))
    }

    /// Ends the waits this event fulfils, then runs the pipe if the event triggers it.
    /// Returns whether anything ran.
    async fn run_event(
        &self,
        loaded: &Loaded,
        event: &Value,
        origin: &str,
        steps: &mut Vec<Value>,
    ) -> Result<bool, String> {
        let pipe_id = &loaded.pipe.id;
        let event_type = event["eventType"].as_str().unwrap_or_default();
        let mut ran = false;
        for (path, expect) in loaded.definition.expects() {
            let Action::Expect {
                key,
                event_types,
                filter,
                on_match,
                ..
            } = expect
            else {
                continue;
            };
            if !event_types.contains(event_type) {
                continue;
            }
            if let Some(filter) = filter
                && self
                    .eval(pipe_id, &format!("{path}.filter"), filter, event)
                    .await?
                    != Value::Bool(true)
            {
                continue;
            }
            let key = key_text(
                &self
                    .eval(pipe_id, &format!("{path}.key"), key, event)
                    .await?,
            );
            let wait = derived_id("wait", &[pipe_id.as_str(), &path, &key]);
            let ended = self
                .store
                .cancel_timer(&wait)
                .await
                .map_err(|error| format!("{path}: {error}"))?;
            steps.push(step(
                &path,
                "expect",
                if ended {
                    format!("matched the wait for {key:?}")
                } else {
                    format!("no wait for {key:?}")
                },
            ));
            if ended {
                ran = true;
                let address = address_of(&loaded.definition, &path, Branch::OnMatch);
                if let Some(address) = address {
                    self.execute(
                        loaded,
                        &address,
                        0,
                        event,
                        &format!("{origin}:{path}"),
                        steps,
                        on_match,
                    )
                    .await?;
                }
            }
        }
        let trigger = &loaded.definition.trigger;
        if !trigger.event_types.contains(event_type) {
            return Ok(ran);
        }
        if let Some(filter) = &trigger.filter {
            let passed = self.eval(pipe_id, "trigger.filter", filter, event).await?;
            steps.push(step("trigger", "filter", passed.to_string()));
            if passed != Value::Bool(true) {
                return Ok(ran);
            }
        }
        let mut event = event.clone();
        if let Some(transform) = &loaded.definition.transform {
            let payload = self.eval(pipe_id, "transform", transform, &event).await?;
            if !payload.is_object() {
                return Err("transform: the new payload must be an object".into());
            }
            steps.push(step("transform", "transform", "payload replaced"));
            event["payload"] = payload;
        }
        let actions = &loaded.definition.actions;
        self.execute(loaded, &[], 0, &event, origin, steps, actions)
            .await?;
        Ok(true)
    }

    /// Runs `list[from..]` (the list at `address`) for one event, until the end or a delay.
    #[allow(clippy::too_many_arguments)]
    fn execute<'a>(
        &'a self,
        loaded: &'a Loaded,
        address: &'a [(usize, Branch)],
        from: usize,
        event: &'a Value,
        origin: &'a str,
        steps: &'a mut Vec<Value>,
        list: &'a [Action],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let pipe_id = &loaded.pipe.id;
            for (index, action) in list.iter().enumerate().skip(from) {
                let at = path_text(address, index);
                match action {
                    Action::Emit {
                        app,
                        event_type,
                        payload,
                        ordering_key,
                        event_id,
                    } => {
                        let outcome = self
                            .emit(
                                pipe_id,
                                &at,
                                origin,
                                event,
                                app,
                                event_type,
                                payload,
                                ordering_key,
                                event_id,
                            )
                            .await?;
                        steps.push(step(&at, "emit", outcome));
                    }
                    Action::Forward { .. } => {
                        let outcome = match action.forward_target() {
                            Some(ForwardTarget::Url(_)) => {
                                self.forward(pipe_id, &at, origin, event).await?
                            }
                            Some(ForwardTarget::SourceEndpoint { source, endpoint }) => {
                                self.forward_to_source(
                                    pipe_id, &at, origin, event, source, endpoint,
                                )
                                .await?
                            }
                            None => return Err(format!("{at}: the forward names no target")),
                        };
                        steps.push(step(&at, "forward", outcome));
                    }
                    Action::Delay { ms } => {
                        let due_at = now_millis() + *ms as Millis;
                        let id = derived_id("delay", &[pipe_id.as_str(), origin, &at]);
                        let state = TimerState {
                            list: address.to_vec(),
                            next: index + 1,
                            event: event.clone(),
                        };
                        self.schedule(pipe_id, id, due_at, &state, IfScheduled::Keep)
                            .await?;
                        steps.push(step(
                            &at,
                            "delay",
                            format!("continues at {}", to_datetime(due_at)),
                        ));
                        return Ok(());
                    }
                    Action::Expect {
                        key,
                        within_ms,
                        restart,
                        ..
                    } => {
                        let key =
                            key_text(&self.eval(pipe_id, &format!("{at}.key"), key, event).await?);
                        let id = derived_id("wait", &[pipe_id.as_str(), &at, &key]);
                        let mut timeout = address.to_vec();
                        timeout.push((index, Branch::OnTimeout));
                        let state = TimerState {
                            list: timeout,
                            next: 0,
                            event: event.clone(),
                        };
                        let due_at = now_millis() + *within_ms as Millis;
                        let if_scheduled = if *restart {
                            IfScheduled::Restart
                        } else {
                            IfScheduled::Keep
                        };
                        let written = self
                            .schedule(pipe_id, id, due_at, &state, if_scheduled)
                            .await?;
                        steps.push(step(
                            &at,
                            "expect",
                            if written {
                                format!("waiting for {key:?} until {}", to_datetime(due_at))
                            } else {
                                format!("already waiting for {key:?}")
                            },
                        ));
                    }
                    Action::Publish {
                        app,
                        device,
                        name,
                        payload,
                        timeout_ms,
                        expires_in_ms,
                    } => {
                        let outcome = self
                            .publish(
                                pipe_id,
                                &at,
                                origin,
                                event,
                                Publish {
                                    app,
                                    device,
                                    name,
                                    payload,
                                    timeout_ms: *timeout_ms,
                                    expires_in_ms: *expires_in_ms,
                                },
                            )
                            .await?;
                        steps.push(step(&at, "publish", outcome));
                    }
                }
            }
            Ok(())
        })
    }

    async fn schedule(
        &self,
        pipe_id: &PipeId,
        id: String,
        due_at: Millis,
        state: &TimerState,
        if_scheduled: IfScheduled,
    ) -> Result<bool, String> {
        let timer = Timer {
            id,
            pipe_id: pipe_id.clone(),
            due_at,
            state: serde_json::to_value(state).expect("timer state serializes"),
        };
        let written = self
            .store
            .schedule_timer(timer, if_scheduled)
            .await
            .map_err(|error| format!("the timer could not be written: {error}"))?;
        self.timers_changed.notify_one();
        Ok(written)
    }

    /// A message to the pipe's own application, on the channel only this action's endpoint
    /// takes: the delivery engine signs, sends, retries and logs it.
    async fn forward(
        &self,
        pipe_id: &PipeId,
        at: &str,
        origin: &str,
        event: &Value,
    ) -> Result<String, String> {
        let app_uid = forward_app_uid(pipe_id);
        let application = self
            .store
            .get_application(&app_uid)
            .await
            .map_err(|error| format!("{at}: {error}"))?
            .ok_or_else(|| format!("{at}: the pipe's forwarding application is missing"))?;
        let message = Message {
            channels: Some(std::iter::once(forward_name(at)).collect()),
            ..forwarded(pipe_id, origin, at, event, application.id)
        };
        self.create(message, at).await
    }

    /// A message in the source's application for that one endpoint: delivered with the
    /// endpoint's own secret, headers, transformation and retries, and seen by nothing else
    /// there (not the source's other endpoints, nor the pipes it triggers).
    async fn forward_to_source(
        &self,
        pipe_id: &PipeId,
        at: &str,
        origin: &str,
        event: &Value,
        source: &str,
        endpoint: &str,
    ) -> Result<String, String> {
        let found = self
            .store
            .get_source(source)
            .await
            .map_err(|error| format!("{at}: {error}"))?
            .ok_or_else(|| format!("{at}: no source {source:?}"))?;
        let application = kait_store::source_application(self.store.as_ref(), &found.id)
            .await
            .map_err(|error| format!("{at}: {error}"))?;
        let target = self
            .store
            .get_endpoint(&application.id, endpoint)
            .await
            .map_err(|error| format!("{at}: {error}"))?
            .ok_or_else(|| format!("{at}: source {source:?} has no endpoint {endpoint:?}"))?;
        let message = forwarded(pipe_id, origin, at, event, application.id);
        self.create_for(message, Some(target.id), at).await
    }

    /// Creates an action's message; one made by an earlier try of the same run counts as done.
    async fn create(&self, message: Message, at: &str) -> Result<String, String> {
        self.create_for(message, None, at).await
    }

    async fn create_for(
        &self,
        message: Message,
        only_endpoint: Option<kait_core::EndpointId>,
        at: &str,
    ) -> Result<String, String> {
        let event_type = message.event_type.clone();
        match self
            .store
            .create_message(NewMessage {
                only_endpoint,
                ..NewMessage::new(message)
            })
            .await
        {
            Ok(accepted) => Ok(format!("sent {} ({event_type})", accepted.message.id)),
            Err(StoreError::Conflict(_)) => Ok(format!("{event_type} was sent before")),
            Err(error) => Err(format!("{at}: {error}")),
        }
    }

    /// Sends a device command (asynchronous: the outcome is an event in the application),
    /// with an id derived from the run and the action, so a retried run sends it once.
    async fn publish(
        &self,
        pipe_id: &PipeId,
        at: &str,
        origin: &str,
        event: &Value,
        action: Publish<'_>,
    ) -> Result<String, String> {
        let devices = self
            .devices
            .as_ref()
            .ok_or_else(|| format!("{at}: publish needs an MQTT broker (--mqtt-url)"))?;
        let application = self
            .store
            .get_application(action.app)
            .await
            .map_err(|error| format!("{at}: {error}"))?
            .ok_or_else(|| format!("{at}: no application {:?}", action.app))?;
        let device = key_text(
            &self
                .eval(pipe_id, &format!("{at}.device"), action.device, event)
                .await?,
        );
        kait_devices::check_segment("device", &device)
            .map_err(|message| format!("{at}.device: {device:?}: {message}"))?;
        let payload = match action.payload {
            Some(code) => {
                self.eval(pipe_id, &format!("{at}.payload"), code, event)
                    .await?
            }
            None => event["payload"].clone(),
        };
        let command = DeviceCommand {
            id: DeviceCommandId::derived(&[pipe_id.as_str(), origin, at]),
            app_id: application.id.clone(),
            device,
            name: action.name.to_owned(),
            payload: payload.to_string(),
            asynchronous: true,
            status: CommandStatus::Sent,
            timeout_ms: action
                .timeout_ms
                .unwrap_or(crate::definition::DEFAULT_COMMAND_TIMEOUT_MS),
            created_at: now_millis(),
            deadline_at: 0,
            reply: None,
            finished_at: None,
        };
        let app_key = application
            .uid
            .clone()
            .unwrap_or_else(|| application.id.as_str().to_owned());
        let sent = devices
            .send_command(
                &app_key,
                command,
                action
                    .expires_in_ms
                    .unwrap_or(crate::definition::DEFAULT_COMMAND_EXPIRES_IN_MS),
            )
            .await
            .map_err(|error| format!("{at}: {error}"))?;
        Ok(format!(
            "command {} to {} {}",
            sent.id,
            sent.device,
            sent.status.as_str()
        ))
    }

    #[allow(clippy::too_many_arguments)]
    async fn emit(
        &self,
        pipe_id: &PipeId,
        at: &str,
        origin: &str,
        event: &Value,
        app: &str,
        event_type: &str,
        payload: &Option<String>,
        ordering_key: &Option<String>,
        event_id: &Option<String>,
    ) -> Result<String, String> {
        let application = self
            .store
            .get_application(app)
            .await
            .map_err(|error| format!("{at}: {error}"))?
            .ok_or_else(|| format!("{at}: no application {app:?}"))?;
        let payload = match payload {
            Some(code) => {
                self.eval(pipe_id, &format!("{at}.payload"), code, event)
                    .await?
            }
            None => event["payload"].clone(),
        };
        if !payload.is_object() {
            return Err(format!("{at}.payload: the payload must be an object"));
        }
        let ordering_key = match ordering_key {
            Some(code) => Some(key_text(
                &self
                    .eval(pipe_id, &format!("{at}.orderingKey"), code, event)
                    .await?,
            )),
            None => None,
        };
        let event_id = match event_id {
            Some(code) => key_text(
                &self
                    .eval(pipe_id, &format!("{at}.eventId"), code, event)
                    .await?,
            ),
            None => derived_id("pipe", &[pipe_id.as_str(), origin, at]),
        };
        if let Some(key) = &ordering_key {
            kait_core::validate::ordering_key(key)
                .map_err(|error| format!("{at}.orderingKey: {error}"))?;
        }
        if event_id.is_empty() || event_id.len() > 256 {
            return Err(format!("{at}.eventId: must be 1 to 256 characters"));
        }
        let message = Message {
            id: MessageId::generate(),
            app_id: application.id,
            event_type: event_type.to_owned(),
            event_id: Some(event_id),
            channels: None,
            ordering_key,
            payload: payload.to_string(),
            raw: None,
            created_at: now_millis(),
            attachments: Vec::new(),
            deliver_at: None,
        };
        self.create(message, at).await
    }

    /// Records a timer that cannot fire any more (finished without running anything).
    async fn dropped(&self, timer: &Timer, origin: &str, reason: String) -> String {
        let steps = vec![json!({ "error": &reason })];
        self.record(&timer.pipe_id, origin, "dropped", steps);
        reason
    }

    /// Continues a pipe when one of its timers fires. `Err` leaves the timer to fire again
    /// when its lease ends.
    pub async fn on_timer(&self, timer: &Timer) -> Result<String, String> {
        let Some(loaded) = self.load(&timer.pipe_id).await? else {
            return Ok("the pipe was deleted".into());
        };
        let origin = format!("{}@{}", timer.id, timer.due_at);
        let state: TimerState = match serde_json::from_value(timer.state.clone()) {
            Ok(state) => state,
            Err(error) => {
                let reason = format!("the timer's state is unreadable ({error}); dropped");
                return Ok(self.dropped(timer, &origin, reason).await);
            }
        };
        let Some(list) = loaded.definition.list_at(&state.list) else {
            let reason = "the pipe changed and no longer has this step; dropped".to_owned();
            return Ok(self.dropped(timer, &origin, reason).await);
        };
        let mut steps = vec![step(
            &path_text(&state.list, state.next),
            "timer",
            format!("fired (due {})", to_datetime(timer.due_at)),
        )];
        let result = self
            .execute(
                &loaded,
                &state.list,
                state.next,
                &state.event,
                &origin,
                &mut steps,
                list,
            )
            .await;
        let outcome = if result.is_ok() { "done" } else { "failed" };
        if let Err(reason) = &result {
            steps.push(json!({ "error": reason }));
        }
        self.record(&timer.pipe_id, &origin, outcome, steps);
        result.map(|()| format!("timer {outcome}"))
    }
}

/// The address of an `expect`'s branch from the expect's path text (`2/onTimeout/0`).
fn address_of(definition: &Definition, path: &str, branch: Branch) -> Option<ListAddress> {
    let mut address = ListAddress::new();
    let mut parts = path.split('/');
    loop {
        let index: usize = parts.next()?.parse().ok()?;
        match parts.next() {
            None => {
                address.push((index, branch));
                return definition.list_at(&address).map(|_| address);
            }
            Some("onMatch") => address.push((index, Branch::OnMatch)),
            Some("onTimeout") => address.push((index, Branch::OnTimeout)),
            Some(_) => return None,
        }
    }
}

#[async_trait::async_trait]
impl PipeRunner for Engine {
    async fn run_pipe(
        &self,
        endpoint_url: &str,
        delivery: &ClaimedDelivery,
    ) -> Result<String, String> {
        match pipe_id_of(endpoint_url) {
            Some(pipe_id) => self.on_event(&pipe_id, delivery).await,
            None => Ok(format!("{endpoint_url} names no pipe")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_short_and_distinct() {
        let a = derived_id("wait", &["pipe_1", "0", "cart-7"]);
        assert_eq!(a, derived_id("wait", &["pipe_1", "0", "cart-7"]));
        assert_ne!(a, derived_id("wait", &["pipe_1", "0", "cart-8"]));
        assert_ne!(a, derived_id("wait", &["pipe_1", "0c", "art-7"]));
        assert_eq!(derived_id("wait", &["x"; 3]).len(), "wait-".len() + 32);
        assert_eq!(key_text(&json!("k")), "k");
        assert_eq!(key_text(&json!(7)), "7");
    }

    #[test]
    fn pipe_endpoint_urls_name_their_pipe() {
        let id = PipeId::generate();
        assert_eq!(pipe_id_of(&endpoint_url(&id)), Some(id));
        assert_eq!(pipe_id_of("kait:pipe/ep_1"), None);
        assert_eq!(pipe_id_of("https://example.com"), None);
    }

    #[test]
    fn an_expects_branch_is_found_from_its_path() {
        let definition = Definition::parse(&json!({
            "trigger": { "app": "a", "eventTypes": ["a"] },
            "actions": [
                { "type": "delay", "ms": 5 },
                { "type": "expect", "key": "e => 1", "withinMs": 5, "onTimeout": [
                    { "type": "expect", "key": "e => 2", "withinMs": 5 }
                ] }
            ]
        }))
        .unwrap();
        assert_eq!(
            address_of(&definition, "1", Branch::OnMatch),
            Some(vec![(1, Branch::OnMatch)])
        );
        assert_eq!(
            address_of(&definition, "1/onTimeout/0", Branch::OnTimeout),
            Some(vec![(1, Branch::OnTimeout), (0, Branch::OnTimeout)])
        );
        assert_eq!(address_of(&definition, "0", Branch::OnMatch), None);
        assert_eq!(address_of(&definition, "x", Branch::OnMatch), None);
    }
}
