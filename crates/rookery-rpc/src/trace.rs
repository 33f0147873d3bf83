//! Trace context across the gRPC hops (docs/decisions/0013-telemetry.md):
//! the caller's span goes in W3C `traceparent`/`tracestate` request
//! metadata, the callee opens its server span under it. Every function is
//! a no-op when tracing is off.

use rookery_core::telemetry::{self, Context, Hop, KeyValue, SpanKind};
use rookery_proto::cm::v1 as cmpb;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::{Request, Status};

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl telemetry::Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl telemetry::Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The attributes of a gRPC span (OpenTelemetry RPC conventions).
fn rpc_attributes(name: &'static str) -> Vec<KeyValue> {
    let (service, method) = name.rsplit_once('/').unwrap_or((name, ""));
    let mut a = vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", service),
        KeyValue::new("rpc.method", method),
    ];
    a.extend(telemetry::node());
    a
}

/// The client span of call `name` (`package.Service/Method`), a child of
/// the current context.
pub(crate) fn client(name: &'static str) -> Option<Hop> {
    Hop::child(name, SpanKind::Client, || rpc_attributes(name))
}

/// The client span of call `name` under `parent`, linked to `links`.
pub(crate) fn client_under(
    name: &'static str,
    parent: &Context,
    links: Vec<telemetry::SpanContext>,
) -> Option<Hop> {
    Hop::start_linked(name, SpanKind::Client, parent, links, || {
        rpc_attributes(name)
    })
}

/// Puts `hop`'s context into the request's metadata.
pub(crate) fn inject<T>(r: &mut Request<T>, hop: Option<&Hop>) {
    if let Some(h) = hop {
        telemetry::inject(h.context(), &mut MetadataInjector(r.metadata_mut()));
    }
}

/// The server span of call `name`, under the caller's span named in the
/// request's metadata; none if the caller sent no sampled span (traces
/// start at the cm).
pub(crate) fn server<T>(name: &'static str, r: &Request<T>) -> Option<Hop> {
    if !telemetry::enabled() {
        return None;
    }
    let parent = telemetry::extract(&MetadataExtractor(r.metadata()));
    if !telemetry::span_context(&parent).is_sampled() {
        return None;
    }
    Hop::start(name, SpanKind::Server, &parent, || rpc_attributes(name))
}

/// Records a call's outcome on its span.
pub(crate) fn outcome<T>(hop: Option<&Hop>, r: &Result<T, Status>) {
    if let Some(h) = hop {
        let code = match r {
            Ok(_) => 0,
            Err(s) => s.code() as i64,
        };
        h.set(KeyValue::new("rpc.grpc.status_code", code));
        if let Err(s) = r {
            h.fail(s.message().to_owned());
        }
    }
}

/// The current span's context for one queued delivery, if traced.
pub(crate) fn carry() -> Option<cmpb::TraceContext> {
    if !telemetry::enabled() {
        return None;
    }
    let mut t = cmpb::TraceContext::default();
    telemetry::inject(&Context::current(), &mut TraceInjector(&mut t));
    (!t.traceparent.is_empty()).then_some(t)
}

/// The context a delivery carried.
pub(crate) fn carried(t: &cmpb::TraceContext) -> Context {
    telemetry::extract(&TraceExtractor(t))
}

struct TraceInjector<'a>(&'a mut cmpb::TraceContext);

impl telemetry::Injector for TraceInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.0.traceparent = value,
            "tracestate" => self.0.tracestate = value,
            _ => {}
        }
    }
}

struct TraceExtractor<'a>(&'a cmpb::TraceContext);

impl telemetry::Extractor for TraceExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(&self.0.traceparent),
            "tracestate" => Some(&self.0.tracestate),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}
