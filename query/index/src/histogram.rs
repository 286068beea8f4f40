//! Counting matches per time bucket (the log-volume histogram) without reading documents: a
//! collector over the `time` fast field.

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

/// Buckets `[start_ns + i * step_ns, start_ns + (i + 1) * step_ns)` for `i < len`.
#[derive(Debug, Clone, Copy)]
pub struct TimeBuckets {
    pub start_ns: i64,
    pub step_ns: i64,
    pub len: usize,
}

impl TimeBuckets {
    fn slot(&self, t: i64) -> Option<usize> {
        if t < self.start_ns || self.step_ns <= 0 {
            return None;
        }
        let i = ((t - self.start_ns) / self.step_ns) as usize;
        (i < self.len).then_some(i)
    }
}

impl Collector for TimeBuckets {
    type Fruit = Vec<u64>;
    type Child = SegmentBuckets;

    fn for_segment(&self, _: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<SegmentBuckets> {
        Ok(SegmentBuckets { buckets: *self, time: reader.fast_fields().i64("time")?, counts: vec![0; self.len] })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<u64>>) -> tantivy::Result<Vec<u64>> {
        let mut out = vec![0; self.len];
        for f in fruits {
            for (o, n) in out.iter_mut().zip(f) {
                *o += n;
            }
        }
        Ok(out)
    }
}

pub struct SegmentBuckets {
    buckets: TimeBuckets,
    time: Column<i64>,
    counts: Vec<u64>,
}

impl SegmentCollector for SegmentBuckets {
    type Fruit = Vec<u64>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(i) = self.time.first(doc).and_then(|t| self.buckets.slot(t)) {
            self.counts[i] += 1;
        }
    }

    fn harvest(self) -> Vec<u64> {
        self.counts
    }
}
