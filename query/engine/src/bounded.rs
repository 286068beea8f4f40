//! Scalar functions whose output can dwarf their input, bounded.
//!
//! DataFusion's memory pool accounts for operators (joins, sorts, aggregations), not for what a
//! scalar function allocates: `repeat('x', 1e9)` or `range(0, 2e8)` once took gigabytes under a
//! 64 MiB pool, in a single poll that no timeout can interrupt. Every function that can grow
//! its input is replaced, per query, by a wrapper that
//!
//! - bounds each row's output from its arguments *before* calling the function (a count
//!   argument, a replacement length, a range's length) and refuses a row over
//!   [`ROW_CAP`];
//! - calls the function on chunks of rows whose bounds add up to at most [`CHUNK_CAP`], and
//!   refuses a call whose output passes [`CALL_CAP`];
//! - counts what functions of constants produce in the whole query against [`CONST_CAP`]: a
//!   constant is copied into every row of every batch, so `repeat('x', 1e6)` in a projection
//!   would cost a megabyte per row.
//!
//! `||` on strings is planned as a bounded function too ([`ConcatOpPlanner`]); on lists it
//! stays DataFusion's (linear, and caught by the next bounded call or the result cap).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, make_array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::sqlparser::ast::BinaryOperator;
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExprSchemable, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// Most bytes one value may take.
pub const ROW_CAP: usize = 16 << 20;
/// Most bytes (by the bound) of the rows handed to the function at once.
pub const CHUNK_CAP: usize = 16 << 20;
/// Most bytes one call (one batch) may produce.
pub const CALL_CAP: usize = 64 << 20;
/// Most bytes all functions of constants in one query may produce together.
pub const CONST_CAP: usize = 64 << 10;

/// How a function's output per row is bounded by its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bound {
    /// `repeat(s, n)`: |s| × n.
    Repeat,
    /// `lpad(s, n [, fill])`: n characters of up to 4 bytes, plus |s|.
    Pad,
    /// `replace(s, from, to)`: |s| + (|s| / max(|from|, 1) + 1) × |to|.
    Replace,
    /// `regexp_replace(s, pattern, repl [, flags])`: |s| + (|s| + 1) × |repl|.
    RegexpReplace,
    /// Case and character mapping: 4 × |s|.
    Map4,
    /// Concatenations and list building: the sum of the arguments (and a separator each).
    Sum,
    /// `array_repeat(e, n)`: |e| × n.
    ArrayRepeat,
    /// `array_resize(a, n [, v])`: n × max(|v|, 16) + |a|.
    ArrayResize,
    /// `range` / `generate_series`: 16 bytes an element.
    Range,
    /// `string_to_array(s, d)`: 16 × |s|.
    Split,
    /// `array_to_string(a, d [, null])` and `array_replace*(a, from, to)`: |a| × (1 + |d| + |null|).
    PerElement,
    /// `arrow_cast(x, type)`: refuses fixed-size target types (one allocation of the declared
    /// size per row, null or not).
    Cast,
}

/// The functions wrapped, by name.
const WRAPPED: &[(&str, Bound)] = &[
    ("repeat", Bound::Repeat),
    ("lpad", Bound::Pad),
    ("rpad", Bound::Pad),
    ("replace", Bound::Replace),
    ("regexp_replace", Bound::RegexpReplace),
    ("translate", Bound::Map4),
    ("upper", Bound::Map4),
    ("lower", Bound::Map4),
    ("initcap", Bound::Map4),
    ("concat", Bound::Sum),
    ("concat_ws", Bound::Sum),
    ("overlay", Bound::Sum),
    ("make_array", Bound::Sum),
    ("array_concat", Bound::Sum),
    ("array_append", Bound::Sum),
    ("array_prepend", Bound::Sum),
    ("array_repeat", Bound::ArrayRepeat),
    ("array_resize", Bound::ArrayResize),
    ("range", Bound::Range),
    ("generate_series", Bound::Range),
    ("string_to_array", Bound::Split),
    ("array_to_string", Bound::PerElement),
    ("array_replace", Bound::PerElement),
    ("array_replace_n", Bound::PerElement),
    ("array_replace_all", Bound::PerElement),
    ("arrow_cast", Bound::Cast),
];

/// What the wrappers of one query share: the bytes functions of constants have produced.
#[derive(Debug, Default)]
pub struct QueryBudget {
    constants: AtomicUsize,
}

/// Replaces the growth-prone functions of `ctx` by bounded wrappers and plans `||` on strings
/// as a bounded function. Call once per query context.
pub fn install(ctx: &mut SessionContext) -> Result<()> {
    let budget = Arc::new(QueryBudget::default());
    let state = ctx.state();
    let mut concat_udf = None;
    for (name, bound) in WRAPPED {
        let Some(inner) = state.scalar_functions().get(*name).cloned() else { continue };
        let udf = Arc::new(ScalarUDF::new_from_impl(Bounded {
            inner: UdfEq::from(inner.inner().clone()),
            bound: *bound,
            strict_nulls: false,
            display: None,
            budget: BudgetRef(budget.clone()),
        }));
        if *name == "concat" {
            concat_udf = Some(inner.inner().clone());
        }
        FunctionRegistry::register_udf(ctx, udf)?;
    }
    let concat_inner =
        concat_udf.ok_or_else(|| DataFusionError::Internal("the concat function is not registered".into()))?;
    let op = Arc::new(ScalarUDF::new_from_impl(Bounded {
        inner: UdfEq::from(concat_inner),
        bound: Bound::Sum,
        strict_nulls: true,
        display: Some("||"),
        budget: BudgetRef(budget),
    }));
    ctx.register_expr_planner(Arc::new(ConcatOpPlanner { udf: op }))?;
    Ok(())
}

/// The shared budget; every wrapper of a query compares equal in it (identity is by function).
#[derive(Clone)]
struct BudgetRef(Arc<QueryBudget>);

impl fmt::Debug for BudgetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueryBudget({})", self.0.constants.load(Ordering::Relaxed))
    }
}

impl PartialEq for BudgetRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for BudgetRef {}

impl std::hash::Hash for BudgetRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(state)
    }
}

/// A function with its output bounded (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: UdfEq<Arc<dyn ScalarUDFImpl>>,
    bound: Bound,
    /// NULL if any argument is NULL (`||`), where `concat` skips NULLs.
    strict_nulls: bool,
    /// An operator to show instead of the function call in column names.
    display: Option<&'static str>,
    budget: BudgetRef,
}

fn too_big(what: &str, bytes: usize, cap: usize, name: &str) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "{name}: {what} would take {bytes} bytes, more than the limit of {cap} bytes per query function result"
    ))
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        if self.display.is_some() { "tracelight_concat_op" } else { self.inner.name() }
    }

    fn aliases(&self) -> &[String] {
        if self.display.is_some() { &[] } else { self.inner.aliases() }
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match (self.display, args) {
            (Some(op), [l, r]) => Ok(format!("{} {op} {}", l.schema_name(), r.schema_name())),
            _ => self.inner.schema_name(args),
        }
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.name().to_string();
        if self.bound == Bound::Cast {
            check_cast_target(&args, &name)?;
            return self.inner.invoke_with_args(args);
        }
        let all_scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if all_scalar { 1 } else { args.number_rows };
        // A scalar argument is one row, read for every row (never expanded to `rows`).
        let arrays: Vec<Arg> = args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Array(arr) => Arg::new(arr.clone(), false),
                ColumnarValue::Scalar(s) => Arg::new(s.to_array()?, true),
            })
            .collect::<Result<_>>()?;
        let bounds: Vec<usize> = (0..rows).map(|i| self.row_bound(&arrays, i)).collect::<Result<_>>()?;
        if let Some(b) = bounds.iter().copied().max().filter(|b| *b > ROW_CAP) {
            return Err(too_big("one value", b, ROW_CAP, &name));
        }
        if all_scalar {
            let b = bounds.first().copied().unwrap_or(0);
            let used = self.budget.0.constants.fetch_add(b, Ordering::AcqRel) + b;
            if used > CONST_CAP {
                return Err(too_big("the functions of constants in this query", used, CONST_CAP, &name));
            }
            let out = self.call(&args, &arrays, 0, 1, all_scalar)?;
            return Ok(out);
        }
        // Chunks whose bounds add up to at most CHUNK_CAP (at least one row each).
        let mut outputs: Vec<ArrayRef> = Vec::new();
        let (mut start, mut sum, mut produced) = (0usize, 0usize, 0usize);
        for i in 0..=rows {
            let next = bounds.get(i).copied();
            if i == rows || (i > start && sum + next.unwrap_or(0) > CHUNK_CAP) {
                if i > start {
                    let out = self.call(&args, &arrays, start, i - start, false)?.to_array(i - start)?;
                    produced += out.get_array_memory_size();
                    if produced > CALL_CAP {
                        return Err(too_big("one batch of results", produced, CALL_CAP, &name));
                    }
                    outputs.push(out);
                }
                (start, sum) = (i, 0);
            }
            sum += next.unwrap_or(0);
        }
        match outputs.len() {
            0 => self.call(&args, &arrays, 0, rows, false),
            1 => Ok(ColumnarValue::Array(outputs.pop().expect("one output"))),
            _ => {
                let refs: Vec<&dyn Array> = outputs.iter().map(|a| a.as_ref()).collect();
                Ok(ColumnarValue::Array(concat(&refs)?))
            }
        }
    }
}

impl Bounded {
    /// Calls the inner function on rows `[start, start + len)`.
    fn call(
        &self,
        args: &ScalarFunctionArgs,
        arrays: &[Arg],
        start: usize,
        len: usize,
        all_scalar: bool,
    ) -> Result<ColumnarValue> {
        let sliced: Vec<ColumnarValue> = if all_scalar {
            args.args.clone()
        } else {
            args.args
                .iter()
                .zip(arrays)
                .map(|(a, arr)| match a {
                    ColumnarValue::Scalar(s) => ColumnarValue::Scalar(s.clone()),
                    ColumnarValue::Array(_) => ColumnarValue::Array(arr.array.slice(start, len)),
                })
                .collect()
        };
        let call = ScalarFunctionArgs {
            args: sliced.clone(),
            arg_fields: args.arg_fields.clone(),
            number_rows: if all_scalar { args.number_rows } else { len },
            return_field: args.return_field.clone(),
            config_options: args.config_options.clone(),
        };
        let out = self.inner.invoke_with_args(call)?;
        let out_bytes = match &out {
            ColumnarValue::Array(a) => a.get_array_memory_size(),
            ColumnarValue::Scalar(s) => s.size(),
        };
        if out_bytes > CALL_CAP {
            return Err(too_big("one batch of results", out_bytes, CALL_CAP, self.name()));
        }
        if self.strict_nulls { strict(out, &sliced, if all_scalar { args.number_rows } else { len }) } else { Ok(out) }
    }

    /// The most bytes row `i` of the output can take.
    fn row_bound(&self, a: &[Arg], i: usize) -> Result<usize> {
        let bytes = |k: usize| a.get(k).map_or(0, |arg| row_bytes(&arg.array, arg.row(i)));
        let int = |k: usize| -> Result<usize> { Ok(a.get(k).map_or(0, |arg| arg.int(i).max(0) as usize)) };
        let s = bytes(0);
        Ok(match self.bound {
            Bound::Repeat => s.saturating_mul(int(1)?),
            Bound::Pad => int(1)?.saturating_mul(4).saturating_add(s),
            Bound::Replace => s.saturating_add((s / bytes(1).max(1) + 1).saturating_mul(bytes(2))),
            Bound::RegexpReplace => s.saturating_add((s + 1).saturating_mul(bytes(2))),
            Bound::Map4 => s.saturating_mul(4),
            Bound::Sum => (0..a.len()).map(bytes).fold(16 * a.len(), usize::saturating_add).saturating_mul(2),
            Bound::ArrayRepeat => s.max(8).saturating_mul(int(1)?),
            Bound::ArrayResize => int(1)?.saturating_mul(bytes(2).max(16)).saturating_add(s),
            Bound::Range => range_len(a, i)?.saturating_mul(16),
            Bound::Split => s.saturating_mul(16),
            Bound::PerElement => s.saturating_mul(1 + bytes(1) + bytes(2)),
            Bound::Cast => 0,
        })
    }
}

/// One argument: its values (one row if it was a scalar), and an integer argument cast to
/// Int64 once for the whole call.
struct Arg {
    array: ArrayRef,
    scalar: bool,
    ints: Option<ArrayRef>,
}

impl Arg {
    fn new(array: ArrayRef, scalar: bool) -> Result<Arg> {
        let ints = array.data_type().is_integer().then(|| cast(&array, &DataType::Int64)).transpose()?;
        Ok(Arg { array, scalar, ints })
    }

    fn row(&self, i: usize) -> usize {
        if self.scalar { 0 } else { i }
    }

    /// Row `i` as an integer (0 when NULL or not an integer).
    fn int(&self, i: usize) -> i64 {
        let i = self.row(i);
        match &self.ints {
            Some(v) if !v.is_null(i) => v.as_primitive::<Int64Type>().value(i),
            _ => 0,
        }
    }
}

/// Bytes of row `i` of `a`: text and binary lengths, a list's values, or the type's width.
fn row_bytes(a: &ArrayRef, i: usize) -> usize {
    if a.is_null(i) {
        return 0;
    }
    match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value_length(i) as usize,
        DataType::LargeUtf8 => a.as_string::<i64>().value_length(i) as usize,
        DataType::Utf8View => a.as_string_view().value(i).len(),
        DataType::Binary => a.as_binary::<i32>().value_length(i) as usize,
        DataType::LargeBinary => a.as_binary::<i64>().value_length(i) as usize,
        DataType::BinaryView => a.as_binary_view().value(i).len(),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) | DataType::Map(..) => {
            a.slice(i, 1).to_data().get_slice_memory_size().unwrap_or(0)
        }
        t => t.primitive_width().unwrap_or(16),
    }
}

/// Elements of `range(stop)`, `range(start, stop [, step])` at row `i`; dates and timestamps
/// with an interval step are counted with the step's shortest length (a month as 28 days).
fn range_len(a: &[Arg], i: usize) -> Result<usize> {
    let scalar = |k: usize| a.get(k).map(|arg| ScalarValue::try_from_array(&arg.array, arg.row(i))).transpose();
    let (start, stop, step) = match a.len() {
        1 => (ScalarValue::Int64(Some(0)), scalar(0)?.unwrap_or(ScalarValue::Null), None),
        _ => (scalar(0)?.unwrap_or(ScalarValue::Null), scalar(1)?.unwrap_or(ScalarValue::Null), scalar(2)?),
    };
    let as_i128 = |v: &ScalarValue| -> Option<i128> {
        match v {
            ScalarValue::Int64(Some(x)) => Some(*x as i128),
            ScalarValue::Date32(Some(d)) => Some(*d as i128 * 86_400_000_000_000),
            ScalarValue::Date64(Some(ms)) => Some(*ms as i128 * 1_000_000),
            ScalarValue::TimestampNanosecond(Some(x), _) => Some(*x as i128),
            ScalarValue::TimestampMicrosecond(Some(x), _) => Some(*x as i128 * 1_000),
            ScalarValue::TimestampMillisecond(Some(x), _) => Some(*x as i128 * 1_000_000),
            ScalarValue::TimestampSecond(Some(x), _) => Some(*x as i128 * 1_000_000_000),
            v if v.data_type().is_integer() => v.cast_to(&DataType::Int64).ok().and_then(|c| match c {
                ScalarValue::Int64(Some(x)) => Some(x as i128),
                _ => None,
            }),
            _ => None,
        }
    };
    let step_len: i128 = match &step {
        None => match start {
            ScalarValue::Int64(_) => 1,
            _ if start.data_type().is_integer() => 1,
            _ => 86_400_000_000_000,
        },
        Some(ScalarValue::IntervalMonthDayNano(Some(v))) => {
            v.months as i128 * 28 * 86_400_000_000_000 + v.days as i128 * 86_400_000_000_000 + v.nanoseconds as i128
        }
        Some(ScalarValue::IntervalDayTime(Some(v))) => {
            v.days as i128 * 86_400_000_000_000 + v.milliseconds as i128 * 1_000_000
        }
        Some(ScalarValue::IntervalYearMonth(Some(m))) => *m as i128 * 28 * 86_400_000_000_000,
        Some(v) => as_i128(v).unwrap_or(1),
    };
    let (Some(s), Some(e)) = (as_i128(&start), as_i128(&stop)) else { return Ok(0) };
    let step_len = step_len.unsigned_abs().max(1);
    Ok(((s - e).unsigned_abs() / step_len + 1).min(usize::MAX as u128) as usize)
}

/// `arrow_cast` to a fixed-size type allocates the declared size for every row.
fn check_cast_target(args: &ScalarFunctionArgs, name: &str) -> Result<()> {
    if matches!(args.return_field.data_type(), DataType::FixedSizeBinary(_) | DataType::FixedSizeList(..)) {
        return Err(DataFusionError::Plan(format!("{name}: casts to fixed-size types are not allowed")));
    }
    Ok(())
}

/// NULL wherever an argument is NULL (SQL's `||`).
fn strict(out: ColumnarValue, args: &[ColumnarValue], rows: usize) -> Result<ColumnarValue> {
    if args.iter().any(|a| matches!(a, ColumnarValue::Scalar(s) if s.is_null())) {
        return Ok(ColumnarValue::Scalar(ScalarValue::try_new_null(&out.data_type())?));
    }
    let mut nulls: Option<NullBuffer> = None;
    for a in args {
        if let ColumnarValue::Array(arr) = a {
            nulls = NullBuffer::union(nulls.as_ref(), arr.logical_nulls().as_ref());
        }
    }
    let Some(nulls) = nulls else { return Ok(out) };
    let arr = out.to_array(rows)?;
    let combined = NullBuffer::union(Some(&nulls), arr.logical_nulls().as_ref());
    let data = arr.to_data().into_builder().nulls(combined).build()?;
    Ok(ColumnarValue::Array(make_array(data)))
}

/// Plans `a || b` on strings as the bounded, NULL-propagating concatenation; lists are left to
/// DataFusion's own planner.
#[derive(Debug)]
pub struct ConcatOpPlanner {
    udf: Arc<ScalarUDF>,
}

impl ExprPlanner for ConcatOpPlanner {
    fn plan_binary_op(&self, expr: RawBinaryExpr, schema: &DFSchema) -> Result<PlannerResult<RawBinaryExpr>> {
        if expr.op != BinaryOperator::StringConcat {
            return Ok(PlannerResult::Original(expr));
        }
        let is_list = |e: &Expr| {
            e.get_type(schema)
                .map(|t| matches!(t, DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)))
        };
        if is_list(&expr.left)? || is_list(&expr.right)? {
            return Ok(PlannerResult::Original(expr));
        }
        Ok(PlannerResult::Planned(Expr::ScalarFunction(ScalarFunction::new_udf(
            self.udf.clone(),
            vec![expr.left, expr.right],
        ))))
    }
}
