//! The sandbox user JavaScript runs in: Svix-style transformations
//! (`function handler(webhook) { …; return webhook; }`) and, for the pipe, expressions over
//! an event (`e => e.payload.total > 100`).
//!
//! Each [`Script`] is compiled once and called many times, in a QuickJS runtime of its own
//! with hard limits (see [`Limits`]): memory (a huge allocation fails the call, not the
//! process), stack depth (deep recursion is an error, not a crash) and wall time per call (an
//! endless loop is interrupted). The context has the language's standard objects only: no
//! module loader and none of QuickJS's `std`/`os` modules, so no file, network, process,
//! environment or clock-setting access (`require`, `process`, `fetch` are not defined).
//! Values cross the boundary as JSON text, so nothing of the host is ever reachable from
//! the script.
//!
//! A runtime is not `Send`: the caller keeps scripts on the thread that compiled them;
//! async callers use [`ScriptPool`], a few threads of its own.

mod allocator;
pub mod pool;
mod transformation;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rquickjs::{CatchResultExt, CaughtError, Context, Function, Persistent, Runtime, Value};

pub use pool::{Call, CallError, ScriptPool};
pub use transformation::{Transformation, TransformationInput, TransformationOutput, read_output};

/// The longest code Kait keeps (a transformation, a pipe's expression), in bytes.
pub const MAX_CODE_BYTES: usize = 64 * 1024;

/// Hard limits of one script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory the script's runtime may allocate in all (its compiled code included).
    pub memory_bytes: usize,
    /// Stack the script may use (bounds recursion depth).
    pub stack_bytes: usize,
    /// Wall time per call (and for compiling).
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 32 * 1024 * 1024,
            stack_bytes: 512 * 1024,
            time: Duration::from_millis(200),
        }
    }
}

/// Why a script could not be compiled or did not return a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error("the code does not compile: {0}")]
    Compile(String),
    #[error("the code defines no function `{0}`")]
    NoEntry(&'static str),
    #[error("the script threw: {0}")]
    Thrown(String),
    #[error("the script ran longer than {0:?} and was stopped")]
    TimedOut(Duration),
    #[error("the script used more than {0} bytes of memory")]
    OutOfMemory(usize),
    #[error("the script recursed too deeply")]
    TooDeep,
    #[error("the script's result is unusable: {0}")]
    BadResult(String),
}

/// What the code is: a script defining a named function, or one expression that is a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Svix's transformations: the code declares `function handler(webhook) { … }`.
    Named(&'static str),
    /// An expression whose value is the function (`e => e.payload.total > 100`).
    Expression,
}

/// A compiled script, ready to be called.
pub struct Script {
    // Field order matters: the function and context go before the runtime.
    function: Persistent<Function<'static>>,
    context: Context,
    _runtime: Runtime,
    limits: Limits,
    /// When the running call must stop; read by the runtime's interrupt handler.
    deadline: Rc<Cell<Option<Instant>>>,
}

impl Script {
    pub fn compile(code: &str, entry: Entry, limits: Limits) -> Result<Self, ScriptError> {
        let runtime = Runtime::new_with_alloc(allocator::ContainedAllocator::default())
            .map_err(|error| ScriptError::Compile(error.to_string()))?;
        runtime.set_memory_limit(limits.memory_bytes);
        runtime.set_max_stack_size(limits.stack_bytes);
        let deadline: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
        let watched = deadline.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || {
            watched.get().is_some_and(|at| Instant::now() >= at)
        })));
        let context =
            Context::full(&runtime).map_err(|error| ScriptError::Compile(error.to_string()))?;
        deadline.set(Some(Instant::now() + limits.time));
        let function = context.with(|ctx| {
            let function: Function = match entry {
                Entry::Named(name) => {
                    ctx.eval::<(), _>(code)
                        .catch(&ctx)
                        .map_err(|error| classify(error, &limits, true, &deadline))?;
                    ctx.globals()
                        .get::<_, Value>(name)
                        .ok()
                        .and_then(|value| value.into_function())
                        .ok_or(ScriptError::NoEntry(name))?
                }
                Entry::Expression => {
                    let value: Value = ctx
                        .eval(format!("({code}\n)"))
                        .catch(&ctx)
                        .map_err(|error| classify(error, &limits, true, &deadline))?;
                    value
                        .into_function()
                        .ok_or(ScriptError::NoEntry("(expression)"))?
                }
            };
            Ok::<_, ScriptError>(Persistent::save(&ctx, function))
        });
        deadline.set(None);
        Ok(Self {
            function: function?,
            context,
            _runtime: runtime,
            limits,
            deadline,
        })
    }

    /// Calls the function with one argument, given and returned as JSON text.
    pub fn call_json(&self, argument: &str) -> Result<String, ScriptError> {
        self.deadline.set(Some(Instant::now() + self.limits.time));
        let result = self.context.with(|ctx| {
            let function = self
                .function
                .clone()
                .restore(&ctx)
                .map_err(|error| ScriptError::Thrown(error.to_string()))?;
            let argument = ctx
                .json_parse(argument)
                .catch(&ctx)
                .map_err(|error| classify(error, &self.limits, false, &self.deadline))?;
            let value: Value = function
                .call((argument,))
                .catch(&ctx)
                .map_err(|error| classify(error, &self.limits, false, &self.deadline))?;
            let json = ctx
                .json_stringify(value)
                .catch(&ctx)
                .map_err(|error| classify(error, &self.limits, false, &self.deadline))?;
            match json {
                Some(text) => text
                    .to_string()
                    .map_err(|error| ScriptError::BadResult(error.to_string())),
                None => Err(ScriptError::BadResult(
                    "the function returned nothing (undefined)".into(),
                )),
            }
        });
        self.deadline.set(None);
        // Whatever the call left behind is collected now, not counted against the next call.
        self._runtime.run_gc();
        result
    }
}

/// Names what went wrong from QuickJS's error: its limits show as particular errors.
fn classify(
    error: CaughtError<'_>,
    limits: &Limits,
    compiling: bool,
    deadline: &Cell<Option<Instant>>,
) -> ScriptError {
    let text = error.to_string();
    // The interrupt handler stops the script with an uncatchable "interrupted" error; a script
    // throwing that word itself is not taken for a timeout.
    if deadline.get().is_some_and(|at| Instant::now() >= at) && text.contains("interrupted") {
        return ScriptError::TimedOut(limits.time);
    }
    if text.contains("out of memory")
        || matches!(error, CaughtError::Error(rquickjs::Error::Allocation))
    {
        return ScriptError::OutOfMemory(limits.memory_bytes);
    }
    if text.contains("stack overflow") || text.contains("Maximum call stack size exceeded") {
        return ScriptError::TooDeep;
    }
    if compiling {
        ScriptError::Compile(text)
    } else {
        ScriptError::Thrown(text)
    }
}

#[cfg(test)]
mod tests;
