//! SVG charts drawn on the server: time on x, a value on y, with axes, ticks, gridlines, a
//! legend and a hover title on every point. Lines (RED over time, metrics), dots (trace
//! durations, exemplars) and bars (log volume). A chart is a template of its own, so every
//! label goes through askama's escaping; pages embed the rendered chart.

use askama::Template;
use tracelight_model::time::{pick_step, rfc3339_ms};

/// The viewBox of a wide chart (a page's main chart) and of a small one (three in a row); the
/// drawing area leaves room for the axes' labels.
const WIDE: (f64, f64) = (960.0, 220.0);
const SMALL: (f64, f64) = (420.0, 170.0);
const LEFT: f64 = 66.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 22.0;

pub struct Tick {
    pub pos: String,
    pub label: String,
    /// Unix milliseconds of an x tick, for the script that shows the viewer's time zone.
    pub ms: i64,
}

pub struct PathLine {
    pub d: String,
    pub color: usize,
}

pub struct Dot {
    pub cx: String,
    pub cy: String,
    pub color: usize,
    pub title: String,
    /// A validated link (a trace page); empty for none.
    pub href: String,
}

pub struct Bar {
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
    pub title: String,
    pub href: String,
}

/// One line: a value per bucket, `None` where there is no data (the line breaks there).
pub struct Line {
    pub label: String,
    pub values: Vec<Option<f64>>,
}

/// A dot at a time and value.
pub struct Point {
    pub time_ns: i64,
    pub value: f64,
    pub title: String,
    pub href: String,
    pub color: usize,
}

#[derive(Template)]
#[template(path = "chart.html")]
pub struct Chart {
    pub title: String,
    pub width: String,
    pub height: String,
    pub x0: String,
    pub x1: String,
    pub y0: String,
    pub y1: String,
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
    pub lines: Vec<PathLine>,
    pub dots: Vec<Dot>,
    pub bars: Vec<Bar>,
    pub legend: Vec<(usize, String)>,
    /// Said in place of the plot when there is nothing to draw.
    pub empty: String,
    /// The value at the top of the y axis.
    top: f64,
    w: f64,
    h: f64,
}

fn f(v: f64) -> String {
    format!("{v:.1}")
}

/// A round step for about `n` ticks over `[0, max]`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let m = raw / mag;
    // 1, 2, 5: ticks whose labels never need more digits than the step has.
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// UTC clock label of a tick; the date too when the range spans days.
fn time_label(ns: i64, with_date: bool) -> String {
    let s = rfc3339_ms(ns);
    if with_date { format!("{} {}", &s[5..10], &s[11..16]) } else { s[11..16].to_string() }
}

/// Maps times and values to the plot.
struct Frame {
    start_ns: i64,
    end_ns: i64,
    max: f64,
    w: f64,
    h: f64,
}

impl Frame {
    fn x(&self, ns: i64) -> f64 {
        let span = (self.end_ns - self.start_ns).max(1) as f64;
        LEFT + (ns - self.start_ns) as f64 / span * (self.w - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        self.h - BOTTOM - (v / self.max).clamp(0.0, 1.0) * (self.h - TOP - BOTTOM)
    }
}

impl Chart {
    /// An empty wide chart of `[start_ns, end_ns)`; add lines, dots or bars.
    pub fn new(title: &str, start_ns: i64, end_ns: i64) -> Chart {
        Chart::sized(title, start_ns, end_ns, WIDE)
    }

    /// A small chart, for three in a row.
    pub fn small(title: &str, start_ns: i64, end_ns: i64) -> Chart {
        Chart::sized(title, start_ns, end_ns, SMALL)
    }

    fn sized(title: &str, start_ns: i64, end_ns: i64, (w, h): (f64, f64)) -> Chart {
        Chart {
            title: title.to_string(),
            width: f(w),
            height: f(h),
            x0: f(LEFT),
            x1: f(w - RIGHT),
            y0: f(TOP),
            y1: f(h - BOTTOM),
            x_ticks: Vec::new(),
            y_ticks: Vec::new(),
            lines: Vec::new(),
            dots: Vec::new(),
            bars: Vec::new(),
            legend: Vec::new(),
            empty: String::new(),
            top: 1.0,
            w,
            h,
        }
        .with_x_ticks(start_ns, end_ns)
    }

    fn frame(&self, start_ns: i64, end_ns: i64, max: f64) -> Frame {
        Frame { start_ns, end_ns, max, w: self.w, h: self.h }
    }

    fn with_x_ticks(mut self, start_ns: i64, end_ns: i64) -> Chart {
        let frame = self.frame(start_ns, end_ns, 1.0);
        let step = pick_step(end_ns - start_ns, if self.w < 600.0 { 4 } else { 8 });
        let with_date = end_ns - start_ns > 86_400_000_000_000;
        let mut t = start_ns.div_euclid(step) * step;
        if t < start_ns {
            t += step;
        }
        while t < end_ns {
            self.x_ticks.push(Tick { pos: f(frame.x(t)), label: time_label(t, with_date), ms: t / 1_000_000 });
            t += step;
        }
        self
    }

    fn with_y_ticks(&mut self, max: f64, fmt: &dyn Fn(f64) -> String) -> f64 {
        let step = nice_step(if max > 0.0 { max } else { 1.0 }, 4.0);
        let top = (if max > 0.0 { max } else { 1.0 } / step).ceil() * step;
        let frame = self.frame(0, 1, top);
        let mut v = 0.0;
        while v <= top + step / 2.0 {
            self.y_ticks.push(Tick { pos: f(frame.y(v)), label: fmt(v), ms: 0 });
            v += step;
        }
        self.top = top;
        top
    }

    /// Lines over buckets of `step_ns` from `start_ns`; `fmt` formats values (axis and titles).
    pub fn lines(
        mut self,
        start_ns: i64,
        end_ns: i64,
        step_ns: i64,
        lines: &[Line],
        fmt: &dyn Fn(f64) -> String,
    ) -> Chart {
        let max = lines.iter().flat_map(|l| l.values.iter().flatten()).fold(0.0f64, |a, b| a.max(*b));
        if lines.iter().all(|l| l.values.iter().all(Option::is_none)) {
            self.empty = "no data in this window".into();
            return self;
        }
        let top = self.with_y_ticks(max, fmt);
        let frame = self.frame(start_ns, end_ns, top);
        for (i, line) in lines.iter().enumerate() {
            let color = i % 8;
            let mut d = String::new();
            let mut pen_down = false;
            for (b, v) in line.values.iter().enumerate() {
                let Some(v) = v.filter(|v| v.is_finite()) else {
                    pen_down = false;
                    continue;
                };
                // A point sits in the middle of its bucket.
                let t = start_ns + step_ns * b as i64 + step_ns / 2;
                let (x, y) = (frame.x(t), frame.y(v));
                d.push_str(&format!("{}{x:.1} {y:.1} ", if pen_down { "L" } else { "M" }));
                pen_down = true;
                self.dots.push(Dot {
                    cx: f(x),
                    cy: f(y),
                    color,
                    title: format!("{} · {} · {}", line.label, rfc3339_ms(start_ns + step_ns * b as i64), fmt(v)),
                    href: String::new(),
                });
            }
            self.lines.push(PathLine { d, color });
            if !line.label.is_empty() {
                self.legend.push((color, line.label.clone()));
            }
        }
        self
    }

    /// Dots at (time, value), e.g. trace durations or exemplars.
    pub fn dots(mut self, start_ns: i64, end_ns: i64, points: Vec<Point>, fmt: &dyn Fn(f64) -> String) -> Chart {
        if points.is_empty() {
            self.empty = "no data in this window".into();
            return self;
        }
        let max = points.iter().map(|p| p.value).fold(0.0f64, f64::max);
        let top = self.with_y_ticks(max, fmt);
        let frame = self.frame(start_ns, end_ns, top);
        self.push(&frame, points);
        self
    }

    /// Exemplar dots over an existing line chart (same scale), linking to their traces.
    pub fn overlay(mut self, start_ns: i64, end_ns: i64, points: Vec<Point>) -> Chart {
        let frame = self.frame(start_ns, end_ns, self.top);
        self.push(&frame, points);
        self
    }

    fn push(&mut self, frame: &Frame, points: Vec<Point>) {
        for p in points {
            self.dots.push(Dot {
                cx: f(frame.x(p.time_ns)),
                cy: f(frame.y(p.value)),
                color: p.color,
                title: p.title,
                href: p.href,
            });
        }
    }

    /// Bars of counts per bucket; `href` gives each bucket's link (empty for none).
    pub fn bars(
        mut self,
        start_ns: i64,
        end_ns: i64,
        step_ns: i64,
        counts: &[u64],
        href: &dyn Fn(i64, i64) -> String,
    ) -> Chart {
        if counts.iter().all(|c| *c == 0) {
            self.empty = "nothing matched in this window".into();
            return self;
        }
        let max = counts.iter().copied().max().unwrap_or(0) as f64;
        let top = self.with_y_ticks(max, &|v| format!("{v:.0}"));
        let frame = self.frame(start_ns, end_ns, top);
        for (i, c) in counts.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            let t0 = start_ns + step_ns * i as i64;
            let t1 = (t0 + step_ns).min(end_ns);
            let (x0, x1) = (frame.x(t0), frame.x(t1));
            let y = frame.y(*c as f64);
            self.bars.push(Bar {
                x: f(x0 + 0.5),
                y: f(y),
                w: f((x1 - x0 - 1.0).max(0.5)),
                h: f(self.h - BOTTOM - y),
                title: format!("{c} from {}", rfc3339_ms(t0)),
                href: href(t0, t1),
            });
        }
        self
    }
}
