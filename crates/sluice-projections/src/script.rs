//! The JavaScript projector: an ES module whose default export is
//! `function project(document, ctx)`, run in QuickJS (through `rquickjs`).
//!
//! The sandbox: no file, network, clock or randomness (the context has no `Date`, no
//! module loader and no `Math.random`; QuickJS itself has no I/O), so that a re-run gives
//! the same entries. Each call is capped in memory (the runtime's allocation limit),
//! stack (QuickJS's stack check) and time (the interrupt handler, polled by the
//! interpreter); a call that hits a cap gets a fresh runtime afterwards, as QuickJS
//! promises nothing about a heap that ran out mid-operation. `ctx.get(collection, key)`
//! is the only way out, and records every read.
//!
//! Module-level variables live as long as the runtime: a script that counts calls in one
//! sees different counts after a cap reset or a restart. Projections must not keep state.

use crate::{CallError, Lookup, Projected, Projector, Read, ScriptError, shape};
use rquickjs::context::intrinsic;
use rquickjs::convert::Coerced;
use rquickjs::{
    Context, Ctx, Exception, FromJs, Function, Module, Object, Persistent, Runtime, Value,
};
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Caps on one call of a script (and on evaluating the module once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScriptLimits {
    /// Everything the runtime allocates: the module, its data and the call's values.
    pub memory_bytes_max: usize,
    /// JavaScript stack depth, in bytes of the calling thread's stack; that thread's
    /// stack must be larger.
    pub stack_bytes_max: usize,
    pub call_time_ms_max: u64,
    pub lookups_per_call_max: usize,
    pub entries_per_call_max: usize,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        Self {
            memory_bytes_max: 32 << 20,
            stack_bytes_max: 256 << 10,
            call_time_ms_max: 100,
            lookups_per_call_max: 1_000,
            entries_per_call_max: 1_000,
        }
    }
}

impl From<&sluice_core::config::ProjectionConfig> for ScriptLimits {
    fn from(config: &sluice_core::config::ProjectionConfig) -> Self {
        Self {
            memory_bytes_max: config.call_memory_bytes_max,
            stack_bytes_max: config.call_stack_bytes_max,
            call_time_ms_max: config.call_time_ms_max,
            lookups_per_call_max: config.lookups_per_call_max,
            entries_per_call_max: config.projection_entries_max,
        }
    }
}

/// A compiled projection script.
pub struct Script {
    file: String,
    source: String,
    version_hash: String,
    limits: ScriptLimits,
    sandbox: Sandbox,
}

impl Script {
    /// Compiles and evaluates the module in `source` (named `file` in messages).
    pub fn compile(file: &str, source: &str, limits: ScriptLimits) -> Result<Self, ScriptError> {
        let sandbox = Sandbox::new(file, source, limits)?;
        Ok(Self {
            file: file.to_owned(),
            source: source.to_owned(),
            version_hash: content_hash(source),
            limits,
            sandbox,
        })
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn limits(&self) -> ScriptLimits {
        self.limits
    }
}

impl Projector for Script {
    fn version_hash(&self) -> &str {
        &self.version_hash
    }

    fn project(&mut self, source: &str, lookup: &Arc<dyn Lookup>) -> Result<Projected, CallError> {
        let result = self.sandbox.call(source, lookup, self.limits);
        if matches!(
            result,
            Err(CallError::Memory { .. } | CallError::Stack { .. } | CallError::Timeout { .. })
        ) {
            // The module compiled before, so it compiles again; should it not, the old
            // runtime stays.
            if let Ok(fresh) = Sandbox::new(&self.file, &self.source, self.limits) {
                self.sandbox = fresh;
            }
        }
        result
    }
}

/// `sha256:` and the hex SHA-256 of the script's text.
pub(crate) fn content_hash(source: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, source.as_bytes());
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in digest.as_ref() {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// What `ctx.get` sees of the call in progress.
#[derive(Default)]
struct CallState {
    lookup: Option<Arc<dyn Lookup>>,
    reads: Vec<Read>,
    seen: HashSet<Read>,
    lookups: usize,
    lookups_max: usize,
    /// A failure outside the script's control (a lookup error, too many lookups): the
    /// call fails with it even if the script caught the exception.
    failure: Option<CallError>,
}

/// The per-call deadline, read by the interrupt handler (which must be `Send`).
struct Clock {
    started: Instant,
    /// Milliseconds since `started` at which the running call is interrupted; 0: none.
    deadline_ms: AtomicU64,
    interrupted: AtomicBool,
}

impl Clock {
    fn arm(&self, time_ms_max: u64) {
        self.interrupted.store(false, Ordering::Relaxed);
        let now_ms = self.started.elapsed().as_millis() as u64;
        self.deadline_ms
            .store(now_ms.saturating_add(time_ms_max).max(1), Ordering::Relaxed);
    }

    fn disarm(&self) {
        self.deadline_ms.store(0, Ordering::Relaxed);
    }

    fn expired(&self) -> bool {
        let deadline_ms = self.deadline_ms.load(Ordering::Relaxed);
        let expired = deadline_ms != 0 && self.started.elapsed().as_millis() as u64 >= deadline_ms;
        if expired {
            self.interrupted.store(true, Ordering::Relaxed);
        }
        expired
    }
}

/// A runtime with the module evaluated. Field order is drop order: the saved values
/// go before the runtime that holds them.
struct Sandbox {
    project: Persistent<Function<'static>>,
    helpers: Persistent<Object<'static>>,
    context: Context,
    _runtime: Runtime,
    state: Rc<RefCell<CallState>>,
    clock: Arc<Clock>,
}

impl Sandbox {
    fn new(file: &str, source: &str, limits: ScriptLimits) -> Result<Self, ScriptError> {
        let runtime = Runtime::new().map_err(|error| ScriptError::Runtime(error.to_string()))?;
        runtime.set_memory_limit(limits.memory_bytes_max);
        runtime.set_max_stack_size(limits.stack_bytes_max);
        let clock = Arc::new(Clock {
            started: Instant::now(),
            deadline_ms: AtomicU64::new(0),
            interrupted: AtomicBool::new(false),
        });
        let handler_clock = Arc::clone(&clock);
        runtime.set_interrupt_handler(Some(Box::new(move || handler_clock.expired())));
        let context = Context::custom::<(
            intrinsic::Eval,
            intrinsic::RegExpCompiler,
            intrinsic::RegExp,
            intrinsic::Json,
            intrinsic::MapSet,
            intrinsic::Promise,
        )>(&runtime)
        .map_err(|error| ScriptError::Runtime(error.to_string()))?;
        let state = Rc::new(RefCell::new(CallState::default()));
        clock.arm(limits.call_time_ms_max);
        let evaluated = context.with(|ctx| evaluate(&ctx, file, source, &state));
        clock.disarm();
        let (project, helpers) = evaluated.map_err(|message| {
            if clock.interrupted.load(Ordering::Relaxed) {
                ScriptError::Module {
                    file: file.to_owned(),
                    message: format!(
                        "evaluating the module took longer than {} ms",
                        limits.call_time_ms_max
                    ),
                }
            } else {
                message
            }
        })?;
        Ok(Self {
            project,
            helpers,
            context,
            _runtime: runtime,
            state,
            clock,
        })
    }

    fn call(
        &self,
        source: &str,
        lookup: &Arc<dyn Lookup>,
        limits: ScriptLimits,
    ) -> Result<Projected, CallError> {
        *self.state.borrow_mut() = CallState {
            lookup: Some(Arc::clone(lookup)),
            lookups_max: limits.lookups_per_call_max,
            ..CallState::default()
        };
        self.clock.arm(limits.call_time_ms_max);
        let result = self.context.with(|ctx| -> Result<String, CallError> {
            let project = self
                .project
                .clone()
                .restore(&ctx)
                .map_err(|error| thrown(&ctx, error, limits))?;
            let helpers = self
                .helpers
                .clone()
                .restore(&ctx)
                .map_err(|error| thrown(&ctx, error, limits))?;
            let document = ctx.json_parse(source).map_err(|error| {
                CallError::Source(match thrown(&ctx, error, limits) {
                    CallError::Threw { message } => message,
                    other => other.to_string(),
                })
            })?;
            let result: Value = project
                .call((document, helpers))
                .map_err(|error| thrown(&ctx, error, limits))?;
            if result.is_undefined() {
                return Err(CallError::Shape(
                    "the function returned nothing: return null for no entry".to_owned(),
                ));
            }
            match ctx.json_stringify(result) {
                Ok(Some(text)) => text
                    .to_string()
                    .map_err(|error| CallError::Shape(error.to_string())),
                Ok(None) => Err(CallError::Shape(
                    "the result is not JSON (a function or a symbol)".to_owned(),
                )),
                Err(error) => Err(CallError::Shape(format!(
                    "the result is not JSON: {}",
                    thrown(&ctx, error, limits)
                ))),
            }
        });
        let interrupted = self.clock.interrupted.load(Ordering::Relaxed);
        self.clock.disarm();
        let state = std::mem::take(&mut *self.state.borrow_mut());
        if let Some(failure) = state.failure {
            return Err(failure);
        }
        let text = match result {
            Err(_) if interrupted => {
                return Err(CallError::Timeout {
                    ms: limits.call_time_ms_max,
                });
            }
            other => other?,
        };
        Ok(Projected {
            entries: shape::entries_from_json(&text, limits.entries_per_call_max)?,
            reads: state.reads,
        })
    }
}

/// Evaluates the module and returns its default export and the frozen `ctx` object.
#[allow(clippy::type_complexity)]
fn evaluate<'js>(
    ctx: &Ctx<'js>,
    file: &str,
    source: &str,
    state: &Rc<RefCell<CallState>>,
) -> Result<(Persistent<Function<'static>>, Persistent<Object<'static>>), ScriptError> {
    let module_error = |message: String| ScriptError::Module {
        file: file.to_owned(),
        message,
    };
    let js_error = |error: rquickjs::Error| module_error(exception_text(ctx, error));
    // No clock and no randomness: a re-run must give the same entries.
    ctx.eval::<(), _>(
        "Math.random = function random() { throw new Error('Math.random is not available in a projection: a re-run must give the same entries'); };\n\
         globalThis.Date = function Date() { throw new Error('Date is not available in a projection: a re-run must give the same entries'); };\n\
         Date.now = Date;",
    )
    .map_err(js_error)?;
    let declared = Module::declare(ctx.clone(), file, source)
        .map_err(|error| compile_error(ctx, file, error))?;
    let (module, promise) = declared
        .eval()
        .map_err(|error| compile_error(ctx, file, error))?;
    promise.finish::<()>().map_err(js_error)?;
    let default: Value = module
        .get("default")
        .map_err(|_| module_error("no default export".to_owned()))?;
    if default.is_undefined() {
        return Err(module_error("no default export".to_owned()));
    }
    let Some(project) = default.as_function().cloned() else {
        return Err(module_error(
            "the default export is not a function (export default function project(doc, ctx) { ... })"
                .to_owned(),
        ));
    };
    let helpers = helpers(ctx, state).map_err(js_error)?;
    Ok((
        Persistent::save(ctx, project),
        Persistent::save(ctx, helpers),
    ))
}

/// The `ctx` argument of every call: `ctx.get(collection, key)`, frozen.
fn helpers<'js>(ctx: &Ctx<'js>, state: &Rc<RefCell<CallState>>) -> rquickjs::Result<Object<'js>> {
    let state = Rc::clone(state);
    let get = Function::new(
        ctx.clone(),
        move |ctx: Ctx<'js>, collection: String, key: Value<'js>| -> rquickjs::Result<Value<'js>> {
            get(&ctx, &state, collection, key)
        },
    )?
    .with_name("get")?;
    let helpers = Object::new(ctx.clone())?;
    helpers.set("get", get)?;
    let object: Object = ctx.globals().get("Object")?;
    let freeze: Function = object.get("freeze")?;
    freeze.call::<_, ()>((helpers.clone(),))?;
    Ok(helpers)
}

fn get<'js>(
    ctx: &Ctx<'js>,
    state: &Rc<RefCell<CallState>>,
    collection: String,
    key: Value<'js>,
) -> rquickjs::Result<Value<'js>> {
    if !(key.is_string() || key.is_number()) {
        return Err(Exception::throw_type(
            ctx,
            "ctx.get(collection, key): the key must be a string or a number",
        ));
    }
    let key = Coerced::<String>::from_js(ctx, key)?.0;
    let lookup = {
        let mut state = state.borrow_mut();
        let Some(lookup) = state.lookup.clone() else {
            return Err(Exception::throw_message(
                ctx,
                "ctx.get is only available during a call",
            ));
        };
        state.lookups += 1;
        if state.lookups > state.lookups_max {
            let max = state.lookups_max;
            state
                .failure
                .get_or_insert(CallError::TooManyLookups { max });
            return Err(Exception::throw_range(
                ctx,
                &format!("more than {max} lookups in one call"),
            ));
        }
        let read = Read {
            collection: collection.clone(),
            key: key.clone(),
        };
        if state.seen.insert(read.clone()) {
            state.reads.push(read);
        }
        lookup
    };
    match lookup.get(&collection, &key) {
        Ok(Some(text)) => ctx.json_parse(text),
        Ok(None) => Ok(Value::new_null(ctx.clone())),
        Err(error) => {
            let message = error.to_string();
            state
                .borrow_mut()
                .failure
                .get_or_insert(CallError::Lookup(error));
            Err(Exception::throw_message(ctx, &message))
        }
    }
}

/// A failed call's error: what was thrown, or the cap it hit.
fn thrown(ctx: &Ctx<'_>, error: rquickjs::Error, limits: ScriptLimits) -> CallError {
    if matches!(error, rquickjs::Error::Allocation) {
        return CallError::Memory {
            bytes: limits.memory_bytes_max,
        };
    }
    let message = exception_text(ctx, error);
    let lower = message.to_ascii_lowercase();
    if lower.contains("out of memory") {
        CallError::Memory {
            bytes: limits.memory_bytes_max,
        }
    } else if lower.contains("stack overflow") || lower.contains("maximum call stack") {
        CallError::Stack {
            bytes: limits.stack_bytes_max,
        }
    } else {
        CallError::Threw { message }
    }
}

/// The message of a thrown value, with where it was thrown when the script says.
fn exception_text(ctx: &Ctx<'_>, error: rquickjs::Error) -> String {
    if !matches!(error, rquickjs::Error::Exception) {
        return error.to_string();
    }
    let value = ctx.catch();
    if let Some(exception) = value.as_exception() {
        let message = exception.message().unwrap_or_default();
        let at = exception.stack().and_then(|stack| {
            stack
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .map(str::to_owned)
        });
        return match at {
            Some(at) => format!("{message} ({at})"),
            None => message,
        };
    }
    Coerced::<String>::from_js(ctx, value)
        .map(|text| text.0)
        .unwrap_or_else(|_| "a value that is not an Error".to_owned())
}

/// A syntax error with its line: QuickJS puts `file:line:column` in the stack.
fn compile_error(ctx: &Ctx<'_>, file: &str, error: rquickjs::Error) -> ScriptError {
    if !matches!(error, rquickjs::Error::Exception) {
        return ScriptError::Module {
            file: file.to_owned(),
            message: error.to_string(),
        };
    }
    let value = ctx.catch();
    let (message, stack) = match value.as_exception() {
        Some(exception) => (
            exception.message().unwrap_or_default(),
            exception.stack().unwrap_or_default(),
        ),
        None => (
            Coerced::<String>::from_js(ctx, value)
                .map(|text| text.0)
                .unwrap_or_default(),
            String::new(),
        ),
    };
    let line = stack.split(&format!("{file}:")).nth(1).and_then(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    match line {
        Some(line) => ScriptError::Compile {
            file: file.to_owned(),
            line,
            message,
        },
        None => ScriptError::Module {
            file: file.to_owned(),
            message,
        },
    }
}
