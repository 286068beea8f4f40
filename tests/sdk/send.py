"""Drives tracelight with the real OpenTelemetry Python SDK, configured only by the standard
environment (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL = grpc | http/protobuf).

Sends SPANS spans in traces of 3 (every 5th trace has an ERROR child), one log record per
span emitted inside the span (so it carries the trace context), and a counter and a
histogram. Prints one JSON line: what was sent, and the trace IDs of the error spans.
"""

import json
import logging
import os
import sys

from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
elif protocol == "http/protobuf":
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
else:
    sys.exit(f"unsupported OTEL_EXPORTER_OTLP_PROTOCOL {protocol}")

service = sys.argv[1]
traces = int(sys.argv[2])
resource = Resource.create({"service.name": service})

tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), max_export_batch_size=64))
tracer = tracer_provider.get_tracer("sdk-interop")

logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
log = logging.getLogger(f"sdk-interop-{service}")
log.setLevel(logging.INFO)
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))
log.propagate = False

reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=3_600_000)
meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
meter = meter_provider.get_meter("sdk-interop")
requests = meter.create_counter("sdk.requests", unit="1", description="requests handled")
latency = meter.create_histogram("sdk.latency", unit="ms", description="request latency")

error_trace_ids = []
for t in range(traces):
    with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.route", "/checkout")
        log.info("checkout started %d", t)
        with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT) as db:
            db.set_attribute("db.system", "postgresql")
            log.info("query ran")
        with tracer.start_as_current_span("charge card", kind=SpanKind.CLIENT) as pay:
            if t % 5 == 0:
                pay.set_status(Status(StatusCode.ERROR, "card declined"))
                error_trace_ids.append(format(pay.get_span_context().trace_id, "032x"))
                log.error("payment failed")
            else:
                log.info("payment ok")
        requests.add(1, {"route": "/checkout"})
        latency.record(12.5 + t, {"route": "/checkout"})

tracer_provider.force_flush()
logger_provider.force_flush()
meter_provider.force_flush()
tracer_provider.shutdown()
logger_provider.shutdown()
meter_provider.shutdown()

print(json.dumps({"service": service, "spans": traces * 3, "logs": traces * 3, "error_trace_ids": error_trace_ids}))
