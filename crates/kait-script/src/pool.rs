//! Threads that run scripts for async code.
//!
//! Two things keep user JavaScript off the async workers: a QuickJS runtime is not `Send`,
//! and a script may spend its whole time limit. So scripts run on a few threads of their
//! own, which take calls from one bounded queue; each thread keeps what it compiled, by the
//! caller's name for the script (`owner`) and its code, so a code version is compiled once per
//! thread and then reused. A full queue fails the call at once (the caller retries it like
//! any failure) instead of making callers wait behind it, and a script that hit a limit is
//! dropped and compiled afresh next time. Endpoint transformations and pipe expressions share
//! one pool.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::{Entry, Limits, Script, ScriptError};

/// How many scripts a thread keeps compiled; past it the cache starts again (a runtime holds
/// a few hundred KiB).
const CACHED_PER_THREAD: usize = 256;

/// Calls waiting for a thread; beyond this a call fails as busy.
const QUEUE: usize = 1024;

/// One call of a script.
pub struct Call {
    /// Names the script for the cache: an endpoint id, a pipe id and a step.
    pub owner: String,
    pub code: Arc<str>,
    pub entry: Entry,
    /// The function's argument, as JSON text.
    pub argument: String,
}

/// Why a call returned no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Script(#[from] ScriptError),
    #[error("too many scripts are waiting to run; try again")]
    Busy,
    #[error("the script threads have stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<String, CallError>>;

/// The handle callers use; clones share the threads.
#[derive(Clone)]
pub struct ScriptPool {
    calls: SyncSender<(Call, Reply)>,
}

impl ScriptPool {
    /// Starts `threads` threads; they end when the last handle is dropped.
    pub fn start(threads: usize, limits: Limits) -> Self {
        let (calls, queue) = sync_channel::<(Call, Reply)>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("kait-script-{index}"))
                .spawn(move || work(&queue, limits))
                .expect("a script thread starts");
        }
        Self { calls }
    }

    /// Runs the script on the argument; the result is JSON text.
    pub async fn call(&self, call: Call) -> Result<String, CallError> {
        let (reply, answer) = oneshot::channel();
        match self.calls.try_send((call, reply)) {
            Ok(()) => answer.await.unwrap_or(Err(CallError::Stopped)),
            Err(TrySendError::Full(_)) => Err(CallError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(CallError::Stopped),
        }
    }
}

type Compiled = HashMap<String, (Arc<str>, Script)>;

fn work(queue: &Mutex<Receiver<(Call, Reply)>>, limits: Limits) {
    let mut compiled = Compiled::new();
    loop {
        // Held only while taking one call, so the threads share the queue.
        let next = queue.lock().expect("script queue lock").recv();
        let Ok((call, reply)) = next else {
            return;
        };
        let result = run(&mut compiled, &call, limits);
        if matches!(
            result,
            Err(ScriptError::OutOfMemory(_) | ScriptError::TimedOut(_) | ScriptError::TooDeep)
        ) {
            // A runtime stopped at a limit may hold what it was building: start clean.
            compiled.remove(&call.owner);
        }
        let _ = reply.send(result.map_err(CallError::from));
    }
}

fn run(compiled: &mut Compiled, call: &Call, limits: Limits) -> Result<String, ScriptError> {
    let current = compiled
        .get(&call.owner)
        .is_some_and(|(code, _)| Arc::ptr_eq(code, &call.code) || **code == *call.code);
    if !current {
        compiled.remove(&call.owner);
        if compiled.len() >= CACHED_PER_THREAD {
            compiled.clear();
        }
        let script = Script::compile(&call.code, call.entry, limits)?;
        compiled.insert(call.owner.clone(), (call.code.clone(), script));
    }
    let (_, script) = compiled.get(&call.owner).expect("compiled above");
    script.call_json(&call.argument)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn call(owner: &str, code: &Arc<str>, argument: &str) -> Call {
        Call {
            owner: owner.into(),
            code: code.clone(),
            entry: Entry::Expression,
            argument: argument.into(),
        }
    }

    fn pool(threads: usize) -> ScriptPool {
        ScriptPool::start(
            threads,
            Limits {
                time: Duration::from_millis(100),
                ..Limits::default()
            },
        )
    }

    #[tokio::test]
    async fn runs_the_code_and_follows_a_new_version() {
        let pool = pool(1);
        let v1: Arc<str> = Arc::from("e => e.total * 2");
        assert_eq!(
            pool.call(call("a", &v1, r#"{"total":5}"#)).await.unwrap(),
            "10"
        );
        let v2: Arc<str> = Arc::from("e => e.total + 1");
        assert_eq!(
            pool.call(call("a", &v2, r#"{"total":5}"#)).await.unwrap(),
            "6"
        );
    }

    #[tokio::test]
    async fn a_hostile_script_fails_its_own_call_and_the_thread_goes_on() {
        let pool = pool(1);
        let endless: Arc<str> = Arc::from("e => { for (;;) {} }");
        let error = pool.call(call("a", &endless, "{}")).await.unwrap_err();
        assert!(
            matches!(error, CallError::Script(ScriptError::TimedOut(_))),
            "{error}"
        );
        let fine: Arc<str> = Arc::from("e => e");
        assert_eq!(pool.call(call("b", &fine, "{}")).await.unwrap(), "{}");
    }

    #[tokio::test]
    async fn code_that_does_not_compile_is_an_error_each_time() {
        let pool = pool(2);
        let broken: Arc<str> = Arc::from("e => {");
        for _ in 0..2 {
            let error = pool.call(call("a", &broken, "{}")).await.unwrap_err();
            assert!(
                matches!(error, CallError::Script(ScriptError::Compile(_))),
                "{error}"
            );
        }
    }
}
