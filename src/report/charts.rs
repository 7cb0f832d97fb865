//! The review page's charts, drawn here as inline SVG text: histograms of the run's
//! similarities and margins, and the colour classes of the per-puzzle heat maps. No script and
//! no request is needed to see them; every chart carries a text title for screen readers.

use std::fmt::Write as _;

/// Width and height of a histogram's drawing, in SVG units (scaled to the page's width).
const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 200.0;
/// Room for the axis labels: left, bottom, top.
const LEFT: f64 = 36.0;
const BOTTOM: f64 = 34.0;
const TOP: f64 = 8.0;

/// A value marked on a histogram's x axis (the ambiguity threshold).
pub struct Marker<'a> {
    pub at: f64,
    pub label: &'a str,
}

/// A histogram to draw: `values` counted in `bins` equal bins over their own range.
pub struct Histogram<'a> {
    /// Read by screen readers and shown on hover.
    pub title: &'a str,
    pub x_label: &'a str,
    pub values: &'a [f64],
    pub bins: usize,
    pub marker: Option<Marker<'a>>,
}

/// Text for SVG and HTML: `<`, `>`, `&` and quotes escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The bin counts of `values` over `[lo, hi]` (the last bin closed), and that range: the
/// values' own range, the marker included, widened a little when all values are equal.
pub fn bin_counts(values: &[f64], bins: usize, marker: Option<f64>) -> (Vec<usize>, f64, f64) {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let mut lo = finite.clone().fold(f64::INFINITY, f64::min);
    let mut hi = finite.fold(f64::NEG_INFINITY, f64::max);
    if let Some(m) = marker.filter(|m| m.is_finite()) {
        lo = lo.min(m);
        hi = hi.max(m);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        (lo, hi) = (lo - 0.05, hi + 0.05);
    }
    let bins = bins.max(1);
    let mut counts = vec![0; bins];
    for v in values.iter().filter(|v| v.is_finite()) {
        let i = (((v - lo) / (hi - lo)) * bins as f64) as usize;
        counts[i.min(bins - 1)] += 1;
    }
    (counts, lo, hi)
}

/// The histogram as an `<svg>` element: bars, the x range and the largest count as labels,
/// the marker as a dashed line.
pub fn histogram(h: &Histogram) -> String {
    let (counts, lo, hi) = bin_counts(h.values, h.bins, h.marker.as_ref().map(|m| m.at));
    let most = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let bar_w = plot_w / counts.len() as f64;
    let x_of = |v: f64| LEFT + (v - lo) / (hi - lo) * plot_w;
    let mut svg = String::with_capacity(4096);
    let _ = write!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"{t}\"><title>{t}</title>",
        t = escape(h.title)
    );
    for (i, &n) in counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let bh = n as f64 / most * plot_h;
        let from = lo + (hi - lo) * i as f64 / counts.len() as f64;
        let to = lo + (hi - lo) * (i + 1) as f64 / counts.len() as f64;
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\">\
             <title>{from:.3} to {to:.3}: {n}</title></rect>",
            LEFT + bar_w * i as f64 + 0.5,
            TOP + plot_h - bh,
            (bar_w - 1.0).max(0.5),
        );
    }
    let base = TOP + plot_h;
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{base}\" x2=\"{:.1}\" y2=\"{base}\"/>\
         <text x=\"{LEFT}\" y=\"{:.1}\">{lo:.2}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{hi:.2}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
        LEFT + plot_w,
        base + 14.0,
        LEFT + plot_w,
        base + 14.0,
        LEFT + plot_w / 2.0,
        base + 30.0,
        escape(h.x_label),
        LEFT - 4.0,
        TOP + 10.0,
        most as usize,
    );
    if let Some(m) = &h.marker {
        let x = x_of(m.at);
        let _ = write!(
            svg,
            "<line class=\"marker\" x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{base}\"/>\
             <text class=\"marker-label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x + 3.0,
            TOP + 10.0,
            escape(m.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The heat map colour class of a similarity: `h0` (lowest) to `h9`, over `[-0.2, 1]` (cosine
/// similarities of text embeddings are rarely far below 0).
pub fn heat_class(similarity: f64) -> &'static str {
    const CLASSES: [&str; 10] = ["h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9"];
    let t = ((similarity + 0.2) / 1.2).clamp(0.0, 1.0);
    CLASSES[((t * 10.0) as usize).min(9)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_one_bin() {
        let values = [0.1, 0.2, 0.2, 0.5, 0.9, f64::NAN];
        let (counts, lo, hi) = bin_counts(&values, 4, Some(0.0));
        assert_eq!(counts.iter().sum::<usize>(), 5);
        assert_eq!((lo, hi), (0.0, 0.9));
        assert_eq!(counts, vec![3, 0, 1, 1]);
    }

    #[test]
    fn equal_values_and_no_values_still_draw() {
        let (counts, lo, hi) = bin_counts(&[0.3, 0.3], 3, None);
        assert!(lo < 0.3 && hi > 0.3);
        assert_eq!(counts.iter().sum::<usize>(), 2);
        let svg = histogram(&Histogram {
            title: "Nothing <yet>",
            x_label: "x",
            values: &[],
            bins: 5,
            marker: None,
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("Nothing &lt;yet&gt;"), "{svg}");
    }

    #[test]
    fn the_marker_is_drawn_and_labelled() {
        let svg = histogram(&Histogram {
            title: "Margins",
            x_label: "margin",
            values: &[-0.1, 0.2, 0.3],
            bins: 10,
            marker: Some(Marker {
                at: 0.05,
                label: "ambiguous below 0.05",
            }),
        });
        assert!(svg.contains("class=\"marker\""), "{svg}");
        assert!(svg.contains("ambiguous below 0.05"));
        assert_eq!(svg.matches("class=\"bar\"").count(), 3);
    }

    #[test]
    fn heat_classes_span_the_range() {
        assert_eq!(heat_class(-1.0), "h0");
        assert_eq!(heat_class(1.0), "h9");
        assert_eq!(heat_class(0.4), "h5");
    }
}
