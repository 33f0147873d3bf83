//! Traces of stanzas (docs/decisions/0013-telemetry.md): one span per hop
//! of a stanza, on the OpenTelemetry API.
//!
//! Nothing here knows the SDK or the exporter: the binary installs a
//! tracer and a propagator ([`install`]) when `[telemetry] otlp_endpoint`
//! is set. Until then [`enabled`] is false, and every function here
//! returns at once after one relaxed atomic load: no span, no context, no
//! allocation on the stanza path.
//!
//! Context crosses `.await`s through [`within`] (the current context while
//! a future is polled), gRPC calls through W3C `traceparent`/`tracestate`
//! metadata (in `rookery-rpc`), and the queue of a client connection as a
//! [`Carried`] span context beside the stanza.

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use opentelemetry::global::BoxedTracer;
use opentelemetry::propagation::TextMapPropagator;
pub use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{Link, Status, TraceContextExt, Tracer};
pub use opentelemetry::trace::{SpanContext, SpanKind, TraceId};
pub use opentelemetry::{Context, KeyValue};

/// Span names (documented in docs/architecture.md, "Traces").
pub mod names {
    /// A client's stanza read at the cm: the root of a stanza's trace.
    pub const RECEIVE: &str = "c2s.receive";
    /// `LocalSessions::route`: the routing rules on the sender's owner.
    pub const ROUTE: &str = "session.route";
    /// A stanza written to a client's stream at the cm.
    pub const WRITE: &str = "c2s.write";
    /// gRPC `Session.Route` (cm → owner of the sender).
    pub const RPC_ROUTE: &str = "rookery.session.v1.Session/Route";
    /// gRPC `Session.Forward` (owner of the sender → owner of the recipient).
    pub const RPC_FORWARD: &str = "rookery.session.v1.Session/Forward";
    /// gRPC `ConnectionManager.Deliver` (owner of the recipient → cm).
    pub const RPC_DELIVER: &str = "rookery.cm.v1.ConnectionManager/Deliver";
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static INSTALLED: RwLock<Option<Installed>> = RwLock::new(None);

struct Installed {
    tracer: BoxedTracer,
    propagator: Box<dyn TextMapPropagator + Send + Sync>,
    node: Arc<str>,
}

/// True once a tracer is installed: the only check on the stanza path
/// when tracing is off.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Makes spans from now on with `tracer`, propagating context with
/// `propagator` (W3C TraceContext); `node` is this process's cluster node
/// (an attribute of the root spans). One per process: a later call
/// replaces the earlier one.
pub fn install(
    tracer: BoxedTracer,
    propagator: Box<dyn TextMapPropagator + Send + Sync>,
    node: &str,
) {
    if let Ok(mut i) = INSTALLED.write() {
        *i = Some(Installed {
            tracer,
            propagator,
            node: Arc::from(node),
        });
        ENABLED.store(true, Ordering::Release);
    }
}

/// Stops making spans (before the exporter shuts down).
pub fn uninstall() {
    ENABLED.store(false, Ordering::Release);
    if let Ok(mut i) = INSTALLED.write() {
        *i = None;
    }
}

/// The installed node name, as an attribute value.
pub fn node() -> Option<KeyValue> {
    let i = INSTALLED.read().ok()?;
    let node = i.as_ref()?.node.clone();
    Some(KeyValue::new("rookery.node", node))
}

/// One hop's span in progress, ended when dropped.
#[derive(Debug)]
pub struct Hop {
    cx: Context,
}

impl Hop {
    /// Starts span `name` under `parent` (an empty context: a new trace),
    /// or `None` when tracing is off. `attributes` is only called when on.
    pub fn start(
        name: &'static str,
        kind: SpanKind,
        parent: &Context,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Option<Hop> {
        Hop::start_linked(name, kind, parent, Vec::new(), attributes)
    }

    /// [`Hop::start`] with links to other spans (a batch's other stanzas).
    pub fn start_linked(
        name: &'static str,
        kind: SpanKind,
        parent: &Context,
        links: Vec<SpanContext>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Option<Hop> {
        if !enabled() {
            return None;
        }
        let installed = INSTALLED.read().ok()?;
        let tracer = &installed.as_ref()?.tracer;
        let mut builder = tracer
            .span_builder(Cow::Borrowed(name))
            .with_kind(kind)
            .with_attributes(attributes());
        if !links.is_empty() {
            builder = builder.with_links(links.into_iter().map(Link::with_context).collect());
        }
        let span = tracer.build_with_context(builder, parent);
        Some(Hop {
            cx: parent.with_span(span),
        })
    }

    /// Starts span `name` as a child of the current context (see
    /// [`within`]), or `None` when tracing is off or the current context
    /// has no sampled span: traces start at the cm's [`names::RECEIVE`],
    /// and a hop of a stanza not sampled there costs nothing more.
    pub fn child(
        name: &'static str,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Option<Hop> {
        if !enabled() {
            return None;
        }
        let parent = Context::current();
        if !parent.span().span_context().is_sampled() {
            return None;
        }
        Hop::start(name, kind, &parent, attributes)
    }

    /// The context with this span current: the parent of the next hops.
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// This span's identity.
    pub fn span_context(&self) -> SpanContext {
        self.cx.span().span_context().clone()
    }

    /// Adds an attribute.
    pub fn set(&self, kv: KeyValue) {
        self.cx.span().set_attribute(kv);
    }

    /// Marks the hop failed.
    pub fn fail(&self, message: impl Into<Cow<'static, str>>) {
        self.cx.span().set_status(Status::error(message));
    }
}

impl Drop for Hop {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

/// Runs `fut` with `hop`'s context current while it is polled (so that
/// the hops it makes are children of `hop`); just `fut` when there is no
/// hop (tracing off).
pub async fn within<F: Future>(hop: Option<&Hop>, fut: F) -> F::Output {
    match hop {
        Some(h) => opentelemetry::context::FutureExt::with_context(fut, h.cx.clone()).await,
        None => fut.await,
    }
}

/// The span context of `cx`'s span (invalid if it has none).
pub fn span_context(cx: &Context) -> SpanContext {
    cx.span().span_context().clone()
}

/// Writes `cx`'s span context into `carrier` (W3C `traceparent`,
/// `tracestate`). Nothing when tracing is off or there is no sampled span
/// (the next hop then makes none either).
pub fn inject(cx: &Context, carrier: &mut dyn Injector) {
    if !enabled() || !cx.span().span_context().is_sampled() {
        return;
    }
    if let Ok(i) = INSTALLED.read()
        && let Some(i) = i.as_ref()
    {
        i.propagator.inject_context(cx, carrier);
    }
}

/// The remote parent `carrier` names, or an empty context.
pub fn extract(carrier: &dyn Extractor) -> Context {
    if !enabled() {
        return Context::new();
    }
    match INSTALLED.read() {
        Ok(i) => match i.as_ref() {
            Some(i) => i.propagator.extract(carrier),
            None => Context::new(),
        },
        Err(_) => Context::new(),
    }
}

/// A span context handed along with a stanza through a queue (a client
/// connection's outbound queue): the parent of the hop that takes it out.
/// One pointer wide; `None` unless tracing is on and the stanza is traced.
#[derive(Clone, Debug, Default)]
pub struct Carried(Option<Box<SpanContext>>);

impl Carried {
    /// Nothing carried.
    pub const NONE: Carried = Carried(None);

    /// The current context's span, if tracing is on and it is sampled.
    pub fn current() -> Carried {
        if !enabled() {
            return Carried(None);
        }
        Context::map_current(|cx| {
            let span = cx.span();
            let sc = span.span_context();
            Carried(sc.is_sampled().then(|| Box::new(sc.clone())))
        })
    }

    /// True if a span context is carried.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// Starts span `name` as a child of the carried span context, or `None`
    /// if nothing is carried (or tracing is off).
    pub fn start(
        &self,
        name: &'static str,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Option<Hop> {
        let sc = self.0.as_deref()?;
        Hop::start(
            name,
            kind,
            &Context::new().with_remote_span_context(sc.clone()),
            attributes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_means_nothing() {
        assert!(!enabled());
        assert!(Hop::child(names::ROUTE, SpanKind::Internal, Vec::new).is_none());
        assert!(!Carried::current().is_some());
        assert_eq!(std::mem::size_of::<Carried>(), 8);
    }
}
