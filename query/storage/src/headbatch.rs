//! How the head holds one request's rows: compactly, and still as Arrow.
//!
//! OTLP sends the resource and scope once per group of items; the table schema repeats them on
//! every row. For a span of an OTel SDK that is about a third of its decoded bytes (seven
//! resource attributes, the scope's name and version). The head keeps those six columns once
//! per batch when every row of the batch shares them (the usual case: one SDK process, one
//! export), and every other column as decoded, copied to exact size. Readers get full rows
//! back with [`HeadBatch::project`], [`HeadBatch::take`] and [`interleave`], which repeat the
//! shared values only for the columns and rows they ask for.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{interleave as interleave_arrays, take};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use tracelight_model::Signal;
use tracelight_model::sink::batch_bytes;

/// The columns a batch may hold once for all its rows (`service_name` stays per row: almost
/// every query reads it).
pub const SHARED: [&str; 6] = [
    "resource_attributes",
    "resource_schema_url",
    "scope_name",
    "scope_version",
    "scope_attributes",
    "scope_schema_url",
];

/// Where each column of a signal's schema lives in a [`HeadBatch`].
struct Layout {
    /// Per full-schema column: `Ok(i)` column `i` of `rows`, `Err(j)` column `j` of `shared`.
    place: Vec<Result<usize, usize>>,
    rows: SchemaRef,
    shared: SchemaRef,
}

fn layout_of(signal: Signal) -> Layout {
    let full = signal.schema();
    let (mut place, mut rows, mut shared) = (Vec::new(), Vec::new(), Vec::new());
    for f in full.fields() {
        if SHARED.contains(&f.name().as_str()) {
            place.push(Err(shared.len()));
            shared.push(f.clone());
        } else {
            place.push(Ok(rows.len()));
            rows.push(f.clone());
        }
    }
    Layout { place, rows: Arc::new(Schema::new(rows)), shared: Arc::new(Schema::new(shared)) }
}

static LAYOUTS: LazyLock<[Layout; 3]> =
    LazyLock::new(|| [layout_of(Signal::Spans), layout_of(Signal::Logs), layout_of(Signal::Metrics)]);

fn layout(signal: Signal) -> &'static Layout {
    &LAYOUTS[match signal {
        Signal::Spans => 0,
        Signal::Logs => 1,
        Signal::Metrics => 2,
    }]
}

/// One batch of head rows of one signal.
#[derive(Clone, Debug)]
pub struct HeadBatch {
    signal: Signal,
    /// Every column but the [`SHARED`] ones, one value per row.
    rows: RecordBatch,
    /// The [`SHARED`] columns: one row standing for every row, or one row per row.
    shared: RecordBatch,
    bytes: usize,
}

impl HeadBatch {
    /// Splits a batch of `signal`'s full schema, keeping the shared columns once when all rows
    /// agree on them, and copies every kept column to its exact size (decoders over-allocate).
    pub fn compact(signal: Signal, batch: &RecordBatch) -> HeadBatch {
        let l = layout(signal);
        let n = batch.num_rows();
        let mut rows = Vec::with_capacity(l.rows.fields().len());
        let mut shared = Vec::with_capacity(SHARED.len());
        for (i, c) in batch.columns().iter().enumerate() {
            match l.place[i] {
                Ok(_) => rows.push(c.clone()),
                Err(_) => shared.push(c.clone()),
            }
        }
        let once = n > 0 && shared.iter().all(|c| all_equal_to_first(c.as_ref()));
        let shared_rows = if once {
            // A copy of the one row, so that the per-row buffers are freed.
            let first = UInt32Array::from(vec![0u32]);
            shared = shared.iter().map(|c| take(c.as_ref(), &first, None).expect("row 0 exists")).collect();
            1
        } else {
            n
        };
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(shared_rows));
        let shared = RecordBatch::try_new_with_options(l.shared.clone(), shared, &options)
            .expect("shared columns match their schema");
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(n));
        let rows =
            RecordBatch::try_new_with_options(l.rows.clone(), rows, &options).expect("row columns match their schema");
        let bytes = batch_bytes(&rows) + batch_bytes(&shared);
        HeadBatch { signal, rows, shared, bytes }
    }

    pub fn num_rows(&self) -> usize {
        self.rows.num_rows()
    }

    /// Bytes held (exact: the buffers were copied to size).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The per-row columns (every column but the [`SHARED`] ones): what indexing and
    /// filtering by time, service or trace ID read.
    pub fn rows(&self) -> &RecordBatch {
        &self.rows
    }

    /// A zero-copy slice of rows.
    pub fn slice(&self, offset: usize, len: usize) -> HeadBatch {
        let rows = self.rows.slice(offset, len);
        let shared = if self.shared.num_rows() == 1 { self.shared.clone() } else { self.shared.slice(offset, len) };
        let bytes = batch_bytes(&rows) + batch_bytes(&shared);
        HeadBatch { signal: self.signal, rows, shared, bytes }
    }

    /// Index of row `r`'s values in `shared`.
    fn shared_row(&self, r: usize) -> usize {
        if self.shared.num_rows() == 1 { 0 } else { r }
    }

    /// The rows with the columns `projection` names (indices into the full schema; `None`:
    /// all), shared values repeated only for shared columns asked for.
    pub fn project(&self, projection: Option<&[usize]>) -> RecordBatch {
        let l = layout(self.signal);
        let all: Vec<usize>;
        let projection = match projection {
            Some(p) => p,
            None => {
                all = (0..l.place.len()).collect();
                &all
            }
        };
        let full = self.signal.schema();
        let n = self.num_rows();
        let repeat = self.shared.num_rows() == 1 && n != 1;
        let columns: Vec<ArrayRef> = projection
            .iter()
            .map(|&i| match l.place[i] {
                Ok(r) => self.rows.column(r).clone(),
                Err(s) if repeat => repeat_first(self.shared.column(s), n),
                Err(s) => self.shared.column(s).clone(),
            })
            .collect();
        let schema = Arc::new(full.project(projection).expect("projection within the schema"));
        RecordBatch::try_new_with_options(
            schema,
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .expect("columns match the schema")
    }

    /// Every column of rows `indices`, in that order.
    pub fn take(&self, indices: &[u32]) -> RecordBatch {
        let pairs: Vec<(usize, usize)> = indices.iter().map(|i| (0, *i as usize)).collect();
        interleave(self.signal, &[self], &pairs).expect("indices are in bounds")
    }
}

/// Rows `(batch, row)` of `batches` (all of `signal`) with every column, in that order.
pub fn interleave(
    signal: Signal,
    batches: &[&HeadBatch],
    indices: &[(usize, usize)],
) -> Result<RecordBatch, ArrowError> {
    let l = layout(signal);
    let rows: Vec<&RecordBatch> = batches.iter().map(|b| &b.rows).collect();
    let shared_indices: Vec<(usize, usize)> = indices.iter().map(|&(b, r)| (b, batches[b].shared_row(r))).collect();
    let mut columns = Vec::with_capacity(l.place.len());
    for place in &l.place {
        let (sources, idx): (Vec<&dyn Array>, &[(usize, usize)]) = match *place {
            Ok(c) => (rows.iter().map(|b| b.column(c).as_ref()).collect(), indices),
            Err(c) => (batches.iter().map(|b| b.shared.column(c).as_ref()).collect(), &shared_indices),
        };
        columns.push(interleave_arrays(&sources, idx)?);
    }
    RecordBatch::try_new_with_options(
        signal.schema(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(indices.len())),
    )
}

/// `n` copies of the one value of `a`: by copying bytes for strings and string maps (every
/// shared column), by `take` otherwise.
fn repeat_first(a: &ArrayRef, n: usize) -> ArrayRef {
    use arrow::array::{MapArray, StringArray, StructArray};
    use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
    fn strings(s: &StringArray, n: usize) -> StringArray {
        // `s` holds whole rows of one map entry list or one value; repeat all of it.
        let (offsets, values) = (s.value_offsets(), s.value_data());
        let (lo, hi) = (offsets[0] as usize, offsets[s.len()] as usize);
        let bytes = &values[lo..hi];
        let mut data = Vec::with_capacity(bytes.len() * n);
        let mut offs = Vec::with_capacity(s.len() * n + 1);
        offs.push(0i32);
        for k in 0..n {
            let base = (k * bytes.len()) as i32;
            data.extend_from_slice(bytes);
            offs.extend(offsets[1..].iter().map(|o| base + (*o - offsets[0])));
        }
        let nulls = s.nulls().map(|nb| NullBuffer::from_iter((0..n).flat_map(|_| nb.iter())));
        StringArray::new(OffsetBuffer::new(ScalarBuffer::from(offs)), Buffer::from_vec(data), nulls)
    }
    if a.null_count() == 0 {
        if let Some(s) = a.as_any().downcast_ref::<StringArray>() {
            return Arc::new(strings(s, n));
        }
        if let Some(m) = a.as_any().downcast_ref::<MapArray>()
            && let (Some(k), Some(v)) =
                (m.keys().as_any().downcast_ref::<StringArray>(), m.values().as_any().downcast_ref::<StringArray>())
            && m.entries().null_count() == 0
        {
            let entries = m.value_length(0) as usize;
            let (k, v) =
                (k.slice(m.value_offsets()[0] as usize, entries), v.slice(m.value_offsets()[0] as usize, entries));
            let (k, v) = (
                k.as_any().downcast_ref::<StringArray>().expect("strings"),
                v.as_any().downcast_ref::<StringArray>().expect("strings"),
            );
            let struct_fields = match m.entries().data_type() {
                arrow::datatypes::DataType::Struct(f) => f.clone(),
                _ => unreachable!("map entries are a struct"),
            };
            let entries_array =
                StructArray::new(struct_fields, vec![Arc::new(strings(k, n)), Arc::new(strings(v, n))], None);
            let offsets =
                OffsetBuffer::new(ScalarBuffer::from((0..=n).map(|i| (i * entries) as i32).collect::<Vec<_>>()));
            let field = match m.data_type() {
                arrow::datatypes::DataType::Map(f, _) => f.clone(),
                _ => unreachable!("a map"),
            };
            return Arc::new(MapArray::new(field, offsets, entries_array, None, false));
        }
    }
    take(a.as_ref(), &UInt32Array::from(vec![0u32; n]), None).expect("row 0 exists")
}

/// Whether every row of `a` equals its first (values and validity).
fn all_equal_to_first(a: &dyn Array) -> bool {
    let n = a.len();
    if n <= 1 {
        return true;
    }
    // Cheap screens first: a column of nulls, or a string column compared by bytes.
    if a.null_count() == n {
        return true;
    }
    if a.null_count() != 0 {
        return false;
    }
    if let Some(s) = a.as_any().downcast_ref::<arrow::array::StringArray>() {
        let v = s.value(0);
        return (1..n).all(|i| s.value(i) == v);
    }
    if let Some(m) = a.as_any().downcast_ref::<arrow::array::MapArray>() {
        let offsets = m.value_offsets();
        let len0 = offsets[1] - offsets[0];
        if offsets.windows(2).any(|w| w[1] - w[0] != len0) {
            return false;
        }
        if len0 == 0 {
            return true;
        }
        let keys = m.keys().as_any().downcast_ref::<arrow::array::StringArray>();
        let values = m.values().as_any().downcast_ref::<arrow::array::StringArray>();
        let (Some(keys), Some(values)) = (keys, values) else {
            return equal_rows_generic(a);
        };
        let base = offsets[0] as usize;
        return (1..n).all(|i| {
            let at = offsets[i] as usize;
            (0..len0 as usize).all(|j| {
                keys.value(at + j) == keys.value(base + j)
                    && values.is_valid(at + j) == values.is_valid(base + j)
                    && (!values.is_valid(at + j) || values.value(at + j) == values.value(base + j))
            })
        });
    }
    equal_rows_generic(a)
}

/// [`all_equal_to_first`] for types without a fast path: row by row through `ArrayData`.
fn equal_rows_generic(a: &dyn Array) -> bool {
    let first = a.slice(0, 1).to_data();
    (1..a.len()).all(|i| a.slice(i, 1).to_data() == first)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use arrow::array::{MapArray, StringArray};
    use tracelight_model::schema::attr_map_builder;

    fn map(rows: &[&[(&str, &str)]]) -> MapArray {
        let mut b = attr_map_builder();
        for r in rows {
            for (k, v) in *r {
                b.keys().append_value(k);
                b.values().append_value(v);
            }
            b.append(true).unwrap();
        }
        b.finish()
    }

    /// A logs batch with every column null or empty except time, service, body and the
    /// resource attributes given per row.
    fn logs(resources: &[&[(&str, &str)]]) -> RecordBatch {
        let times: Vec<i64> = (0..resources.len() as i64).collect();
        logs_at(&times, resources)
    }

    /// A logs batch of rows at `times` (see [`logs`]).
    pub(crate) fn logs_at(times: &[i64], resources: &[&[(&str, &str)]]) -> RecordBatch {
        let schema = Signal::Logs.schema();
        let n = resources.len();
        let columns = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    "resource_attributes" => Arc::new(map(resources)),
                    "scope_attributes" | "attributes" => Arc::new(map(&vec![&[][..]; n])),
                    "service_name" => Arc::new(StringArray::from(vec!["checkout"; n])),
                    "body" => Arc::new(StringArray::from((0..n).map(|i| format!("line {i}")).collect::<Vec<_>>())),
                    "time" => Arc::new(
                        arrow::array::TimestampNanosecondArray::from(times.to_vec())
                            .with_data_type(tracelight_model::schema::ts_type()),
                    ),
                    _ => arrow::array::new_null_array(f.data_type(), n),
                }
            })
            .collect::<Vec<_>>();
        // Non-nullable primitive columns: zeros instead of nulls.
        let columns = columns
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if !f.is_nullable() && c.null_count() > 0 {
                    arrow::compute::cast(&arrow::array::Int64Array::from(vec![0i64; n]), f.data_type()).unwrap()
                } else {
                    c
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn a_shared_resource_is_held_once_and_given_back_on_every_row() {
        let res: &[(&str, &str)] = &[("service.name", "checkout"), ("host.name", "node-1"), ("k8s.pod.name", "p-1")];
        let full = logs(&vec![res; 1000]);
        let hb = HeadBatch::compact(Signal::Logs, &full);
        assert_eq!(hb.shared.num_rows(), 1);
        assert!(hb.bytes() < batch_bytes(&full) / 2, "{} of {}", hb.bytes(), batch_bytes(&full));
        assert_eq!(hb.project(None), full);
        let picked = hb.take(&[999, 3, 3]);
        assert_eq!(picked, arrow::compute::take_record_batch(&full, &UInt32Array::from(vec![999, 3, 3])).unwrap());
        let body = Signal::Logs.schema().index_of("body").unwrap();
        let ra = Signal::Logs.schema().index_of("resource_attributes").unwrap();
        let p = hb.project(Some(&[ra, body]));
        assert_eq!(p.schema().field(0).name(), "resource_attributes");
        assert_eq!(p.column(0), full.column(ra));
        assert_eq!(hb.slice(10, 5).project(None), full.slice(10, 5));
    }

    #[test]
    fn rows_with_different_resources_keep_one_value_each() {
        let a: &[(&str, &str)] = &[("service.name", "checkout"), ("host.name", "node-1")];
        let b: &[(&str, &str)] = &[("service.name", "checkout"), ("host.name", "node-2")];
        let c: &[(&str, &str)] = &[("service.name", "checkout")];
        let full = logs(&[a, a, b, a, c]);
        let hb = HeadBatch::compact(Signal::Logs, &full);
        assert_eq!(hb.shared.num_rows(), 5);
        assert_eq!(hb.project(None), full);
        let other = HeadBatch::compact(Signal::Logs, &logs(&[a, a]));
        let mixed = interleave(Signal::Logs, &[&hb, &other], &[(1, 1), (0, 2), (0, 4), (1, 0)]).unwrap();
        let want = arrow::compute::concat_batches(
            &Signal::Logs.schema(),
            &[full.slice(0, 1), full.slice(2, 1), full.slice(4, 1), full.slice(0, 1)],
        )
        .unwrap();
        // Bodies differ between the two sources; compare the resource column and the shape.
        let ra = Signal::Logs.schema().index_of("resource_attributes").unwrap();
        assert_eq!(mixed.column(ra), want.column(ra));
        assert_eq!(mixed.num_rows(), 4);
        assert_eq!(mixed.schema(), Signal::Logs.schema());
    }

    #[test]
    fn empty_and_one_row_batches() {
        let empty = HeadBatch::compact(Signal::Logs, &logs(&[]));
        assert_eq!(empty.num_rows(), 0);
        assert_eq!(empty.project(None).num_rows(), 0);
        let one = HeadBatch::compact(Signal::Logs, &logs(&[&[("a", "b")]]));
        assert_eq!(one.project(None), logs(&[&[("a", "b")]]));
    }
}
