//! decode → Arrow per signal: protobuf bytes of realistic requests to a record batch.
//! Reports throughput in items (spans, log records, points) per second.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use tracelight_collector::decode::{self, DecodeContext, Format, ItemLimits};
use tracelight_collector::synth::{self, Rng};
use tracelight_model::Tenant;

const ITEMS: usize = 1000;
const T0: u64 = 1_793_491_200_000_000_000;

fn bench(c: &mut Criterion) {
    let ctx = DecodeContext { tenant: Tenant::default(), now_ns: T0 as i64, limits: ItemLimits::default() };
    let mut rng = Rng::new(7);
    let traces = synth::traces(&mut rng, ITEMS, T0).encode_to_vec();
    let logs = synth::logs(&mut rng, ITEMS, T0).encode_to_vec();
    let metrics = synth::metrics(&mut rng, ITEMS, T0).encode_to_vec();
    let mut g = c.benchmark_group("decode_to_arrow");
    g.throughput(Throughput::Elements(ITEMS as u64));
    g.bench_function("traces_protobuf", |b| b.iter(|| decode::decode_traces(&traces, Format::Protobuf, &ctx).unwrap()));
    g.bench_function("logs_protobuf", |b| b.iter(|| decode::decode_logs(&logs, Format::Protobuf, &ctx).unwrap()));
    g.bench_function("metrics_protobuf", |b| {
        b.iter(|| decode::decode_metrics(&metrics, Format::Protobuf, &ctx).unwrap())
    });
    let traces_req =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(&traces[..]).unwrap();
    let traces_json = serde_json::to_vec(&traces_req).unwrap();
    g.bench_function("traces_json", |b| b.iter(|| decode::decode_traces(&traces_json, Format::Json, &ctx).unwrap()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
