//! The time bounds of a scan: from the request and from `WHERE` conjuncts on the table's time
//! column. They decide which partitions and segments are opened at all.

use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;

/// `[start_ns, end_ns)`; `None` is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
}

impl TimeRange {
    fn lower(&mut self, v: i64) {
        self.start_ns = Some(self.start_ns.map_or(v, |s| s.max(v)));
    }
    fn upper(&mut self, v: i64) {
        self.end_ns = Some(self.end_ns.map_or(v, |e| e.min(v)));
    }

    /// Narrows the range with every filter that bounds `column` by a timestamp literal.
    pub fn narrow(mut self, column: &str, filters: &[Expr]) -> TimeRange {
        for f in filters {
            self.apply(column, f);
        }
        self
    }

    fn apply(&mut self, column: &str, f: &Expr) {
        match f {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if *op == Operator::And {
                    self.apply(column, left);
                    self.apply(column, right);
                    return;
                }
                let (col_left, lit) = match (is_col(left, column), is_col(right, column)) {
                    (true, false) => (true, ts_literal(right)),
                    (false, true) => (false, ts_literal(left)),
                    _ => return,
                };
                let Some(v) = lit else { return };
                // Normalise to "column OP literal".
                let op = if col_left { *op } else { op.swap().unwrap_or(*op) };
                match op {
                    Operator::Gt => self.lower(v.saturating_add(1)),
                    Operator::GtEq => self.lower(v),
                    Operator::Lt => self.upper(v),
                    Operator::LtEq => self.upper(v.saturating_add(1)),
                    Operator::Eq => {
                        self.lower(v);
                        self.upper(v.saturating_add(1));
                    }
                    _ => {}
                }
            }
            Expr::Between(b) if !b.negated && is_col(&b.expr, column) => {
                if let Some(lo) = ts_literal(&b.low) {
                    self.lower(lo);
                }
                if let Some(hi) = ts_literal(&b.high) {
                    self.upper(hi.saturating_add(1));
                }
            }
            _ => {}
        }
    }
}

fn is_col(e: &Expr, column: &str) -> bool {
    matches!(e, Expr::Column(c) if c.name == column)
}

/// A timestamp literal in nanoseconds, whatever its unit.
fn ts_literal(e: &Expr) -> Option<i64> {
    let Expr::Literal(v, _) = e else { return None };
    match v {
        ScalarValue::TimestampNanosecond(Some(n), _) => Some(*n),
        ScalarValue::TimestampMicrosecond(Some(n), _) => n.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(n), _) => n.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(n), _) => n.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn ts(n: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(Some(n), Some("UTC".into())))
    }

    #[test]
    fn bounds_come_from_comparisons_and_between() {
        let r = TimeRange::default().narrow("time", &[col("time").gt_eq(ts(100)), ts(200).gt(col("time"))]);
        assert_eq!(r, TimeRange { start_ns: Some(100), end_ns: Some(200) });
        let r =
            TimeRange { start_ns: Some(150), end_ns: None }.narrow("time", &[col("time").between(ts(100), ts(300))]);
        assert_eq!(r, TimeRange { start_ns: Some(150), end_ns: Some(301) });
        let r = TimeRange::default().narrow("time", &[col("time").gt(ts(5)).and(col("time").lt_eq(ts(9)))]);
        assert_eq!(r, TimeRange { start_ns: Some(6), end_ns: Some(10) });
    }

    #[test]
    fn other_columns_and_disjunctions_do_not_bound() {
        let r = TimeRange::default()
            .narrow("time", &[col("end_time").gt(ts(5)), col("time").gt(ts(5)).or(col("time").lt(ts(1)))]);
        assert_eq!(r, TimeRange::default());
    }
}
