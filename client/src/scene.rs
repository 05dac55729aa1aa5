//! A view as a small list of drawing primitives, independent of where it is
//! drawn: the GUI paints a [`Scene`] on an iced canvas, the export writes it
//! as SVG ([`Scene::to_svg`]) and renders that to PNG.

use std::fmt::Write as _;
use std::sync::Arc;

use aevis_shared::layout::colour::Rgb;

/// Horizontal anchor of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// `x` is the left end.
    Start,
    /// `x` is the middle.
    Middle,
    /// `x` is the right end.
    End,
}

/// A line style.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stroke {
    /// Colour.
    pub colour: Rgb,
    /// Width in scene units.
    pub width: f32,
    /// Dash length (0 = solid).
    pub dash: f32,
}

impl Stroke {
    /// A solid line.
    pub fn solid(colour: Rgb, width: f32) -> Self {
        Self { colour, width, dash: 0.0 }
    }

    /// A dashed line.
    pub fn dashed(colour: Rgb, width: f32, dash: f32) -> Self {
        Self { colour, width, dash }
    }
}

/// One drawing primitive. Coordinates are scene units, `y` grows downwards.
#[derive(Debug, Clone, PartialEq)]
pub enum Prim {
    /// A rectangle.
    Rect {
        /// Left.
        x: f32,
        /// Top.
        y: f32,
        /// Width.
        w: f32,
        /// Height.
        h: f32,
        /// Fill colour and opacity.
        fill: Option<(Rgb, f32)>,
        /// Outline.
        stroke: Option<Stroke>,
    },
    /// A rectangle filled with a grid of dots (the contribution encoding).
    Dots {
        /// Left.
        x: f32,
        /// Top.
        y: f32,
        /// Width.
        w: f32,
        /// Height.
        h: f32,
        /// Dot colour.
        colour: Rgb,
        /// Distance between dot centres.
        spacing: f32,
    },
    /// An open polyline, optionally smoothed into a curve through its points.
    Line {
        /// Points.
        points: Vec<(f32, f32)>,
        /// Style.
        stroke: Stroke,
        /// Draw a smooth curve (monotone cubic in x) instead of straight segments.
        smooth: bool,
    },
    /// A closed polygon.
    Polygon {
        /// Corners.
        points: Vec<(f32, f32)>,
        /// Fill colour and opacity.
        fill: (Rgb, f32),
    },
    /// A circle.
    Circle {
        /// Centre x.
        cx: f32,
        /// Centre y.
        cy: f32,
        /// Radius.
        r: f32,
        /// Fill.
        fill: Rgb,
        /// Outline.
        stroke: Option<Stroke>,
    },
    /// A line of text; `y` is the baseline.
    Text {
        /// Anchor point x.
        x: f32,
        /// Baseline y.
        y: f32,
        /// The text.
        text: String,
        /// Font size.
        size: f32,
        /// Colour.
        colour: Rgb,
        /// Horizontal anchor.
        anchor: Anchor,
    },
    /// A PNG image stretched over a rectangle.
    Image {
        /// Left.
        x: f32,
        /// Top.
        y: f32,
        /// Width.
        w: f32,
        /// Height.
        h: f32,
        /// PNG bytes.
        png: Arc<Vec<u8>>,
        /// Scale with nearest-neighbour (heat maps) instead of smoothing.
        pixelated: bool,
    },
}

/// A view ready to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// Width in scene units.
    pub width: f32,
    /// Height in scene units.
    pub height: f32,
    /// Background colour.
    pub background: Rgb,
    /// Primitives, back to front.
    pub prims: Vec<Prim>,
}

/// Font family name used for text (the bundled Fira Sans).
pub const FONT_FAMILY: &str = "Fira Sans";

fn num(v: f32) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".to_owned() } else { s.to_owned() }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if (c as u32) < 0x20 && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 with padding (for `data:` URLs).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// SVG path data of a smooth curve through points sorted by x (monotone
/// cubic Hermite, so the curve never overshoots between columns).
pub fn smooth_path(points: &[(f32, f32)]) -> Vec<[(f32, f32); 3]> {
    let n = points.len();
    if n < 2 {
        return Vec::new();
    }
    let slope = |i: usize| {
        let dx = points[i + 1].0 - points[i].0;
        if dx.abs() < 1e-6 { 0.0 } else { (points[i + 1].1 - points[i].1) / dx }
    };
    let secants: Vec<f32> = (0..n - 1).map(slope).collect();
    let mut tangents = vec![0.0f32; n];
    tangents[0] = secants[0];
    tangents[n - 1] = secants[n - 2];
    for i in 1..n - 1 {
        let (a, b) = (secants[i - 1], secants[i]);
        tangents[i] = if a * b <= 0.0 { 0.0 } else { 2.0 / (1.0 / a + 1.0 / b) };
    }
    (0..n - 1)
        .map(|i| {
            let (p, q) = (points[i], points[i + 1]);
            let h = (q.0 - p.0) / 3.0;
            [(p.0 + h, p.1 + tangents[i] * h), (q.0 - h, q.1 - tangents[i + 1] * h), q]
        })
        .collect()
}

impl Scene {
    /// An empty scene.
    pub fn new(width: f32, height: f32, background: Rgb) -> Self {
        Self { width, height, background, prims: Vec::new() }
    }

    /// Adds a primitive.
    pub fn push(&mut self, p: Prim) {
        self.prims.push(p);
    }

    /// Adds a text.
    pub fn text(&mut self, x: f32, y: f32, text: impl Into<String>, size: f32, colour: Rgb, anchor: Anchor) {
        self.push(Prim::Text { x, y, text: text.into(), size, colour, anchor });
    }

    /// Adds a filled rectangle.
    pub fn fill_rect(&mut self, x: f32, y: f32, w: f32, h: f32, colour: Rgb) {
        self.push(Prim::Rect { x, y, w, h, fill: Some((colour, 1.0)), stroke: None });
    }

    /// All texts, in order (what tests and screen readers look at).
    pub fn texts(&self) -> Vec<&str> {
        self.prims
            .iter()
            .filter_map(|p| match p {
                Prim::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The scene as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let mut s = String::new();
        let (w, h) = (num(self.width.max(1.0)), num(self.height.max(1.0)));
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT_FAMILY}">"#
        );
        let mut defs = String::new();
        let mut body = String::new();
        let _ = writeln!(body, r#"<rect width="{w}" height="{h}" fill="{}"/>"#, self.background.to_hex());
        let mut patterns = 0usize;
        let stroke_attrs = |st: &Stroke| {
            let mut a = format!(r#" stroke="{}" stroke-width="{}""#, st.colour.to_hex(), num(st.width));
            if st.dash > 0.0 {
                let _ = write!(a, r#" stroke-dasharray="{} {}""#, num(st.dash), num(st.dash));
            }
            a
        };
        for p in &self.prims {
            match p {
                Prim::Rect { x, y, w, h, fill, stroke } => {
                    let fill_attr = match fill {
                        Some((c, o)) if *o < 1.0 => format!(r#"fill="{}" fill-opacity="{}""#, c.to_hex(), num(*o)),
                        Some((c, _)) => format!(r#"fill="{}""#, c.to_hex()),
                        None => r#"fill="none""#.to_owned(),
                    };
                    let st = stroke.as_ref().map(stroke_attrs).unwrap_or_default();
                    let _ = writeln!(
                        body,
                        r#"<rect x="{}" y="{}" width="{}" height="{}" {fill_attr}{st}/>"#,
                        num(*x),
                        num(*y),
                        num(w.max(0.0)),
                        num(h.max(0.0))
                    );
                }
                Prim::Dots { x, y, w, h, colour, spacing } => {
                    let sp = spacing.max(1.0);
                    let id = format!("dots{patterns}");
                    patterns += 1;
                    let _ = writeln!(
                        defs,
                        r#"<pattern id="{id}" patternUnits="userSpaceOnUse" x="{}" y="{}" width="{s}" height="{s}"><circle cx="{c}" cy="{c}" r="{r}" fill="{}"/></pattern>"#,
                        num(*x),
                        num(*y),
                        colour.to_hex(),
                        s = num(sp),
                        c = num(sp / 2.0),
                        r = num(sp / 4.0),
                    );
                    let _ = writeln!(
                        body,
                        r#"<rect x="{}" y="{}" width="{}" height="{}" fill="url(#{id})"/>"#,
                        num(*x),
                        num(*y),
                        num(w.max(0.0)),
                        num(h.max(0.0))
                    );
                }
                Prim::Line { points, stroke, smooth } => {
                    if points.len() < 2 {
                        continue;
                    }
                    let mut d = format!("M{} {}", num(points[0].0), num(points[0].1));
                    if *smooth {
                        for [c1, c2, q] in smooth_path(points) {
                            let _ = write!(
                                d,
                                " C{} {} {} {} {} {}",
                                num(c1.0),
                                num(c1.1),
                                num(c2.0),
                                num(c2.1),
                                num(q.0),
                                num(q.1)
                            );
                        }
                    } else {
                        for p in &points[1..] {
                            let _ = write!(d, " L{} {}", num(p.0), num(p.1));
                        }
                    }
                    let _ = writeln!(
                        body,
                        r#"<path d="{d}" fill="none"{} stroke-linecap="round" stroke-linejoin="round"/>"#,
                        stroke_attrs(stroke)
                    );
                }
                Prim::Polygon { points, fill } => {
                    if points.len() < 3 {
                        continue;
                    }
                    let pts: Vec<String> = points.iter().map(|p| format!("{},{}", num(p.0), num(p.1))).collect();
                    let _ = writeln!(
                        body,
                        r#"<polygon points="{}" fill="{}" fill-opacity="{}"/>"#,
                        pts.join(" "),
                        fill.0.to_hex(),
                        num(fill.1)
                    );
                }
                Prim::Circle { cx, cy, r, fill, stroke } => {
                    let st = stroke.as_ref().map(stroke_attrs).unwrap_or_default();
                    let _ = writeln!(
                        body,
                        r#"<circle cx="{}" cy="{}" r="{}" fill="{}"{st}/>"#,
                        num(*cx),
                        num(*cy),
                        num(r.max(0.0)),
                        fill.to_hex()
                    );
                }
                Prim::Text { x, y, text, size, colour, anchor } => {
                    let anchor = match anchor {
                        Anchor::Start => "start",
                        Anchor::Middle => "middle",
                        Anchor::End => "end",
                    };
                    let _ = writeln!(
                        body,
                        r#"<text x="{}" y="{}" font-size="{}" fill="{}" text-anchor="{anchor}">{}</text>"#,
                        num(*x),
                        num(*y),
                        num(*size),
                        colour.to_hex(),
                        escape(text)
                    );
                }
                Prim::Image { x, y, w, h, png, pixelated } => {
                    let rendering = if *pixelated { r#" image-rendering="optimizeSpeed""# } else { "" };
                    let _ = writeln!(
                        body,
                        r#"<image x="{}" y="{}" width="{}" height="{}" preserveAspectRatio="none"{rendering} href="data:image/png;base64,{}"/>"#,
                        num(*x),
                        num(*y),
                        num(w.max(0.0)),
                        num(h.max(0.0)),
                        base64(png)
                    );
                }
            }
        }
        if !defs.is_empty() {
            let _ = writeln!(s, "<defs>\n{defs}</defs>");
        }
        s.push_str(&body);
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_by_hand() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn svg_of_a_small_scene() {
        let mut s = Scene::new(100.0, 50.0, Rgb::new(1.0, 1.0, 1.0));
        s.fill_rect(1.0, 2.0, 3.5, 4.0, Rgb::new(1.0, 0.0, 0.0));
        s.text(10.0, 20.0, "a<b & c", 12.0, Rgb::new(0.0, 0.0, 0.0), Anchor::Middle);
        s.push(Prim::Dots { x: 0.0, y: 0.0, w: 10.0, h: 10.0, colour: Rgb::new(0.0, 0.0, 1.0), spacing: 4.0 });
        let svg = s.to_svg();
        assert!(svg.contains(r##"<rect x="1" y="2" width="3.5" height="4" fill="#ff0000"/>"##), "{svg}");
        assert!(svg.contains(">a&lt;b &amp; c</text>"));
        assert!(svg.contains(r#"<pattern id="dots0""#));
        assert!(svg.contains(r#"fill="url(#dots0)""#));
        assert_eq!(s.texts(), vec!["a<b & c"]);
        assert_eq!(num(f32::NAN), "0");
        assert_eq!(num(-0.001), "0");
    }

    #[test]
    fn smooth_curve_passes_through_points_without_overshoot() {
        let pts = [(0.0, 0.0), (10.0, 10.0), (20.0, 10.0), (30.0, 0.0)];
        let segs = smooth_path(&pts);
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[2][2], (30.0, 0.0));
        // A flat stretch stays flat: tangents are zero at a local extreme.
        assert_eq!(segs[1][0].1, 10.0);
        assert_eq!(segs[1][1].1, 10.0);
        assert!(smooth_path(&pts[..1]).is_empty());
    }
}
