//! Endpoint transformations at delivery time.
//!
//! A transformation is user JavaScript (Svix's `handler(webhook)`) run in `kait-script`'s
//! sandbox. Two things keep it off the async workers: a QuickJS runtime is not `Send`, and a
//! script may spend its whole time limit. So scripts run on a few threads of their own,
//! which take jobs from one bounded queue; each thread keeps the scripts it compiled, by
//! endpoint and code, so a code version is compiled once per thread and then reused. A full
//! queue fails the attempt at once (retried like any failure) rather than making attempts
//! wait behind it, and a script that hit a limit is dropped and compiled afresh next time.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use kait_core::EndpointId;
use kait_script::{Limits, ScriptError, Transformation, TransformationInput, TransformationOutput};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

/// How many scripts a thread keeps compiled; past it the cache starts again (a runtime holds
/// a few hundred KiB).
const CACHED_PER_THREAD: usize = 256;

/// Jobs waiting for a thread; beyond this the attempt fails as busy.
const QUEUE: usize = 1024;

/// One webhook to transform.
pub struct Job {
    pub endpoint_id: EndpointId,
    pub code: Arc<str>,
    pub method: &'static str,
    pub url: String,
    pub event_type: Arc<str>,
    /// The payload as JSON object text.
    pub payload: Arc<str>,
}

/// Why a webhook could not be transformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("{0}")]
    Script(#[from] ScriptError),
    #[error("too many transformations are waiting; try again")]
    Busy,
    #[error("the transformation threads have stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<TransformationOutput, TransformError>>;

/// The handle attempts use; cloning shares the threads.
#[derive(Clone)]
pub struct Transformer {
    jobs: SyncSender<(Job, Reply)>,
}

impl Transformer {
    /// Starts `threads` threads; they end when the last handle is dropped.
    pub fn start(threads: usize, limits: Limits) -> Self {
        let (jobs, queue) = sync_channel::<(Job, Reply)>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("kait-transform-{index}"))
                .spawn(move || work(&queue, limits))
                .expect("a transformation thread starts");
        }
        Self { jobs }
    }

    /// Runs the endpoint's transformation on one webhook.
    pub async fn run(&self, job: Job) -> Result<TransformationOutput, TransformError> {
        let (reply, answer) = oneshot::channel();
        match self.jobs.try_send((job, reply)) {
            Ok(()) => answer.await.unwrap_or(Err(TransformError::Stopped)),
            Err(TrySendError::Full(_)) => Err(TransformError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(TransformError::Stopped),
        }
    }
}

fn work(queue: &Mutex<Receiver<(Job, Reply)>>, limits: Limits) {
    let mut compiled: HashMap<EndpointId, (Arc<str>, Transformation)> = HashMap::new();
    loop {
        // Held only while taking one job, so the threads share the queue.
        let next = queue.lock().expect("transform queue lock").recv();
        let Ok((job, reply)) = next else {
            return;
        };
        let result = transform(&mut compiled, &job, limits);
        if matches!(
            result,
            Err(TransformError::Script(
                ScriptError::OutOfMemory(_) | ScriptError::TimedOut(_) | ScriptError::TooDeep
            ))
        ) {
            // A runtime stopped at a limit may hold what it was building: start clean.
            compiled.remove(&job.endpoint_id);
        }
        let _ = reply.send(result);
    }
}

fn transform(
    compiled: &mut HashMap<EndpointId, (Arc<str>, Transformation)>,
    job: &Job,
    limits: Limits,
) -> Result<TransformationOutput, TransformError> {
    let current = compiled
        .get(&job.endpoint_id)
        .is_some_and(|(code, _)| Arc::ptr_eq(code, &job.code) || **code == *job.code);
    if !current {
        compiled.remove(&job.endpoint_id);
        if compiled.len() >= CACHED_PER_THREAD {
            compiled.clear();
        }
        let transformation = Transformation::compile(&job.code, limits)?;
        compiled.insert(job.endpoint_id.clone(), (job.code.clone(), transformation));
    }
    let (_, transformation) = compiled.get(&job.endpoint_id).expect("compiled above");
    let payload: &RawValue = serde_json::from_str(&job.payload)
        .map_err(|error| ScriptError::BadResult(format!("the payload is not JSON: {error}")))?;
    Ok(transformation.run(&TransformationInput {
        method: job.method,
        url: &job.url,
        event_type: &job.event_type,
        payload,
        cancel: false,
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn job(endpoint_id: &EndpointId, code: &Arc<str>) -> Job {
        Job {
            endpoint_id: endpoint_id.clone(),
            code: code.clone(),
            method: "POST",
            url: "https://example.com/hook".into(),
            event_type: Arc::from("order.created"),
            payload: Arc::from(r#"{"total":5}"#),
        }
    }

    fn limits() -> Limits {
        Limits {
            time: Duration::from_millis(100),
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn runs_the_code_and_follows_a_new_version() {
        let transformer = Transformer::start(1, limits());
        let endpoint = EndpointId::generate();
        let v1: Arc<str> =
            Arc::from("function handler(w) { w.payload.total *= 2; w.method = 'PUT'; return w; }");
        let out = transformer.run(job(&endpoint, &v1)).await.unwrap();
        assert_eq!(out.payload, r#"{"total":10}"#);
        assert_eq!(out.method, "PUT");
        let v2: Arc<str> = Arc::from(
            "function handler(w) { w.cancel = w.eventType === 'order.created'; return w; }",
        );
        let out = transformer.run(job(&endpoint, &v2)).await.unwrap();
        assert!(out.cancel);
    }

    #[tokio::test]
    async fn a_hostile_script_fails_its_own_job_and_the_thread_goes_on() {
        let transformer = Transformer::start(1, limits());
        let endpoint = EndpointId::generate();
        let endless: Arc<str> = Arc::from("function handler(w) { for (;;) {} }");
        let error = transformer.run(job(&endpoint, &endless)).await.unwrap_err();
        assert!(
            matches!(error, TransformError::Script(ScriptError::TimedOut(_))),
            "{error}"
        );
        let fine: Arc<str> = Arc::from("function handler(w) { return w; }");
        let other = EndpointId::generate();
        let out = transformer.run(job(&other, &fine)).await.unwrap();
        assert_eq!(out.payload, r#"{"total":5}"#);
    }

    #[tokio::test]
    async fn code_that_does_not_compile_is_an_error_each_time() {
        let transformer = Transformer::start(2, limits());
        let endpoint = EndpointId::generate();
        let broken: Arc<str> = Arc::from("function handler(w) {");
        for _ in 0..2 {
            let error = transformer.run(job(&endpoint, &broken)).await.unwrap_err();
            assert!(
                matches!(error, TransformError::Script(ScriptError::Compile(_))),
                "{error}"
            );
        }
    }
}
