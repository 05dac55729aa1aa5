//! Paints a [`Scene`] on an iced canvas frame, so the GUI shows exactly what
//! the export writes.

use iced::widget::canvas::{self, Frame, LineDash, Path, Stroke as CStroke};
use iced::{Color, Pixels, Point, Rectangle, Size, Vector, alignment};

use crate::scene::{Anchor, Prim, Scene, Stroke, smooth_path};
use crate::theme;

const DASH: [f32; 2] = [4.0, 4.0];

/// How a scene sits in a canvas: uniform scale and offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Canvas units per scene unit.
    pub scale: f32,
    /// Canvas position of the scene's origin.
    pub offset: Vector,
}

impl Fit {
    /// Fits a `width × height` scene into `bounds` (never enlarging beyond 1.5×).
    pub fn new(width: f32, height: f32, bounds: Size) -> Self {
        let (w, h) = (width.max(1.0), height.max(1.0));
        let scale = (bounds.width / w).min(bounds.height / h).clamp(0.05, 1.5);
        Self { scale, offset: Vector::new(0.0, 0.0) }
    }

    /// Scene coordinates of a canvas point.
    pub fn to_scene(&self, p: Point) -> (f32, f32) {
        ((p.x - self.offset.x) / self.scale, (p.y - self.offset.y) / self.scale)
    }

    /// Canvas point of scene coordinates.
    pub fn to_canvas(&self, x: f32, y: f32) -> Point {
        Point::new(x * self.scale + self.offset.x, y * self.scale + self.offset.y)
    }
}

fn colour(c: aevis_shared::layout::colour::Rgb, alpha: f32) -> Color {
    let mut col = theme::color(c);
    col.a = alpha;
    col
}

fn stroke(s: &Stroke, scale: f32) -> CStroke<'static> {
    let mut st = CStroke::default().with_color(theme::color(s.colour)).with_width((s.width * scale).max(0.5));
    if s.dash > 0.0 {
        st.line_dash = LineDash { segments: &DASH, offset: 0 };
    }
    st
}

/// Draws every primitive of `scene` into `frame` under `fit`.
pub fn paint(frame: &mut Frame, scene: &Scene, fit: Fit) {
    let k = fit.scale;
    let p = |x: f32, y: f32| fit.to_canvas(x, y);
    let sz = |w: f32, h: f32| Size::new(w.max(0.0) * k, h.max(0.0) * k);
    frame.fill_rectangle(p(0.0, 0.0), sz(scene.width, scene.height), theme::color(scene.background));
    for prim in &scene.prims {
        match prim {
            Prim::Rect { x, y, w, h, fill, stroke: st } => {
                if let Some((c, a)) = fill {
                    frame.fill_rectangle(p(*x, *y), sz(*w, *h), colour(*c, *a));
                }
                if let Some(s) = st {
                    frame.stroke(&Path::rectangle(p(*x, *y), sz(*w, *h)), stroke(s, k));
                }
            }
            Prim::Dots { x, y, w, h, colour: c, spacing } => {
                let sp = spacing.max(1.0);
                let (nx, ny) = ((w / sp).floor() as usize, (h / sp).floor() as usize);
                let dots = Path::new(|b| {
                    for j in 0..ny {
                        for i in 0..nx {
                            b.circle(p(x + (i as f32 + 0.5) * sp, y + h - (j as f32 + 0.5) * sp), sp / 4.0 * k);
                        }
                    }
                });
                frame.fill(&dots, theme::color(*c));
            }
            Prim::Line { points, stroke: s, smooth } => {
                if points.len() < 2 {
                    continue;
                }
                let path = Path::new(|b| {
                    b.move_to(p(points[0].0, points[0].1));
                    if *smooth {
                        for [c1, c2, q] in smooth_path(points) {
                            b.bezier_curve_to(p(c1.0, c1.1), p(c2.0, c2.1), p(q.0, q.1));
                        }
                    } else {
                        for q in &points[1..] {
                            b.line_to(p(q.0, q.1));
                        }
                    }
                });
                frame.stroke(&path, stroke(s, k));
            }
            Prim::Polygon { points, fill } => {
                if points.len() < 3 {
                    continue;
                }
                let path = Path::new(|b| {
                    b.move_to(p(points[0].0, points[0].1));
                    for q in &points[1..] {
                        b.line_to(p(q.0, q.1));
                    }
                    b.close();
                });
                frame.fill(&path, colour(fill.0, fill.1));
            }
            Prim::Circle { cx, cy, r, fill, stroke: st } => {
                let path = Path::circle(p(*cx, *cy), r * k);
                frame.fill(&path, theme::color(*fill));
                if let Some(s) = st {
                    frame.stroke(&path, stroke(s, k));
                }
            }
            Prim::Text { x, y, text, size, colour: c, anchor } => {
                let align_x = match anchor {
                    Anchor::Start => iced::widget::text::Alignment::Left,
                    Anchor::Middle => iced::widget::text::Alignment::Center,
                    Anchor::End => iced::widget::text::Alignment::Right,
                };
                frame.fill_text(canvas::Text {
                    content: text.clone(),
                    // The scene's y is the baseline; iced anchors the line box.
                    position: p(*x, y + size * 0.25),
                    color: theme::color(*c),
                    size: Pixels(size * k),
                    align_x,
                    align_y: alignment::Vertical::Bottom,
                    ..canvas::Text::default()
                });
            }
            Prim::Image { x, y, w, h, png, pixelated } => {
                let handle = iced::widget::image::Handle::from_bytes(png.as_ref().clone());
                let filter = if *pixelated {
                    iced::widget::image::FilterMethod::Nearest
                } else {
                    iced::widget::image::FilterMethod::Linear
                };
                frame.draw_image(
                    Rectangle::new(p(*x, *y), sz(*w, *h)),
                    canvas::Image::new(handle).filter_method(filter),
                );
            }
        }
    }
}
