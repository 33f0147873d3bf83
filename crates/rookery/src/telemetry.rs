//! Traces over OTLP/gRPC (docs/decisions/0013-telemetry.md): when
//! `[telemetry] otlp_endpoint` is set, the OpenTelemetry SDK with a batch
//! exporter to that collector, installed as the tracer of
//! [`rookery_core::telemetry`]; otherwise nothing at all.

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::{info, warn};

use crate::config::TelemetryConfig;

/// How long one export to the collector may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The tracing of one process; [`Telemetry::shutdown`] exports what is
/// still buffered.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Nothing is traced.
    pub fn off() -> Telemetry {
        Telemetry { provider: None }
    }

    /// Starts tracing if an endpoint is configured. `node` and `roles`
    /// describe this process (resource attributes `service.instance.id`,
    /// `rookery.roles`). Must run inside the tokio runtime (the exporter's
    /// gRPC channel lives on it).
    pub fn start(config: &TelemetryConfig, node: &str, roles: &str) -> anyhow::Result<Telemetry> {
        if config.otlp_endpoint.is_empty() {
            return Ok(Telemetry::off());
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .with_context(|| format!("the OTLP exporter to {}", config.otlp_endpoint))?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attributes([
                KeyValue::new("service.instance.id", node.to_owned()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("rookery.roles", roles.to_owned()),
            ])
            .build();
        // Parent-based: a hop follows the decision of its caller (carried
        // in the trace flags); roots are sampled by trace id.
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("rookery");
        rookery_core::telemetry::install(
            BoxedTracer::new(Box::new(tracer)),
            Box::new(TraceContextPropagator::new()),
            node,
        );
        info!(
            endpoint = %config.otlp_endpoint,
            sample_ratio = config.sample_ratio,
            "tracing to OTLP"
        );
        Ok(Telemetry {
            provider: Some(provider),
        })
    }

    /// Stops tracing and exports the spans still buffered (bounded by the
    /// export timeout).
    pub async fn shutdown(mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        rookery_core::telemetry::uninstall();
        // Blocking: the batch processor's thread exports, driven by this
        // runtime's gRPC channel, so it must not run on a runtime thread.
        let r =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(EXPORT_TIMEOUT * 2))
                .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "spans not all exported at shutdown"),
            Err(e) => warn!(error = %e, "tracing shutdown failed"),
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Dropped without `shutdown` (a test, an error path): shut down on
        // a thread of its own, as it blocks.
        if let Some(provider) = self.provider.take() {
            rookery_core::telemetry::uninstall();
            let _ = std::thread::Builder::new()
                .name("rookery-otel-stop".into())
                .spawn(move || {
                    let _ = provider.shutdown_with_timeout(EXPORT_TIMEOUT);
                });
        }
    }
}
