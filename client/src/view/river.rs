//! The network level: three datapath curves along the DAG (paper §5.2, Fig. 6).

use aevis_shared::graph::LayerGraph;
use aevis_shared::layout::river::{Collapse, MiniMap, RiverLayout, RiverParams, minimap, river};
use aevis_shared::protocol::{Role, SessionResult};

use super::{class_name, image_caption};
use crate::scene::{Anchor, Prim, Scene, Stroke};
use crate::theme;

/// Where the parts of the river scene are, for hit-testing in the GUI.
#[derive(Debug, Clone, PartialEq)]
pub struct RiverFrame {
    /// The layout (column x, offsets, bands).
    pub layout: RiverLayout,
    /// y of the riverbed's centre line.
    pub centre_y: f32,
    /// Top and bottom of the plot area.
    pub plot: (f32, f32),
    /// The mini-map and its top-left corner.
    pub minimap: (MiniMap, (f32, f32)),
}

const TOP: f32 = 64.0;
const BAND_HEADER: f32 = 34.0;
const SKIP_AREA: f32 = 36.0;
const MINI_HEIGHT: f32 = 36.0;

/// Spacing used by the river view.
pub fn params() -> RiverParams {
    RiverParams::default()
}

/// Builds the river scene of a session.
pub fn scene(
    session: &SessionResult,
    graph: &LayerGraph,
    collapse: &Collapse,
    classes: &[String],
) -> (Scene, RiverFrame) {
    let p = params();
    let layout = river(&session.analysis, graph, collapse, &p);
    let width = layout.width.max(720.0);
    let plot_top = TOP + BAND_HEADER;
    let centre_y = plot_top + 16.0 + p.spread / 2.0;
    let plot_bottom = centre_y + p.spread / 2.0 + 16.0;
    let mini_top = plot_bottom + SKIP_AREA + 22.0;
    let height = mini_top + MINI_HEIGHT + 46.0;
    let mut s = Scene::new(width, height, theme::BACKGROUND);

    // Title and legend: which image is which, with classes.
    s.text(16.0, 24.0, format!("{} — network level", graph.model), theme::TITLE, theme::TEXT, Anchor::Start);
    let mut lx = 16.0;
    for role in Role::ALL {
        let img = &session.path(role).image;
        let label =
            format!("{}: {} ({})", theme::role_name(role), class_name(classes, img.predicted), image_caption(img));
        s.push(Prim::Line {
            points: vec![(lx, 44.0), (lx + 22.0, 44.0)],
            stroke: Stroke::solid(theme::role(role), theme::CURVE_WIDTH),
            smooth: false,
        });
        s.text(lx + 28.0, 48.0, label.clone(), theme::SMALL + 1.0, theme::TEXT, Anchor::Start);
        lx += 40.0 + label.chars().count() as f32 * 6.6;
    }

    // Stage bands, then block bands inside them.
    for (i, b) in layout.stages.iter().enumerate() {
        let fill = if i % 2 == 0 { theme::BAND } else { theme::BAND_ALT };
        s.push(Prim::Rect {
            x: b.x0,
            y: TOP,
            w: b.x1 - b.x0,
            h: plot_bottom - TOP,
            fill: Some((fill, 1.0)),
            stroke: None,
        });
        let name = if b.collapsed { format!("{} +", b.name) } else { b.name.clone() };
        if b.x1 - b.x0 >= 30.0 || b.collapsed {
            s.text((b.x0 + b.x1) / 2.0, TOP + 14.0, name, theme::SMALL, theme::MUTED, Anchor::Middle);
        }
    }
    for b in &layout.blocks {
        s.push(Prim::Rect {
            x: b.x0 + 2.0,
            y: TOP + 20.0,
            w: (b.x1 - b.x0 - 4.0).max(1.0),
            h: 10.0,
            fill: Some((theme::BLOCK, 1.0)),
            stroke: None,
        });
        let short = b.name.rsplit('.').next().unwrap_or(&b.name).to_owned();
        if b.x1 - b.x0 >= 16.0 {
            s.text((b.x0 + b.x1) / 2.0, TOP + 28.5, short, 8.0, theme::MUTED, Anchor::Middle);
        }
    }

    // Skip connections of the DAG as arcs under the river.
    for sk in &layout.skips {
        let (x0, x1) = (layout.columns[sk.from].x, layout.columns[sk.to].x);
        let depth = ((x1 - x0) / 4.0).clamp(6.0, SKIP_AREA - 6.0);
        let y = plot_bottom + 4.0;
        s.push(Prim::Line {
            points: vec![(x0, y), ((x0 + x1) / 2.0, y + depth), (x1, y)],
            stroke: Stroke::solid(theme::RULE, 1.0),
            smooth: true,
        });
    }

    // Riverbed, curves, markers.
    let pts =
        |i: usize| -> Vec<(f32, f32)> { layout.columns.iter().map(|c| (c.x, centre_y + c.centred()[i])).collect() };
    if layout.columns.len() >= 2 {
        let mut bed = pts(0);
        bed.extend(pts(2).into_iter().rev());
        s.push(Prim::Polygon { points: bed, fill: (theme::RIVERBED, 0.7) });
    }
    for c in &layout.columns {
        s.push(Prim::Line {
            points: vec![(c.x, plot_bottom - 6.0), (c.x, plot_bottom)],
            stroke: Stroke::solid(theme::RULE, 1.0),
            smooth: false,
        });
    }
    for (c, label, colour) in layout
        .columns
        .iter()
        .filter(|c| c.diverging)
        .map(|c| (c, "diverging", theme::DIVERGING))
        .chain(layout.columns.iter().filter(|c| c.merging).map(|c| (c, "merging", theme::MERGING)))
    {
        s.push(Prim::Line {
            points: vec![(c.x, plot_top), (c.x, plot_bottom - 8.0)],
            stroke: Stroke::dashed(colour, 1.5, 4.0),
            smooth: false,
        });
        let dy = if label == "merging" && c.diverging { 11.0 } else { 0.0 };
        s.text(c.x, plot_top + 10.0 + dy, label, theme::SMALL, colour, Anchor::Middle);
    }
    for role in Role::ALL {
        let points = pts(role.index());
        let colour = theme::role(role);
        if points.len() >= 2 {
            s.push(Prim::Line {
                points: points.clone(),
                stroke: Stroke::solid(colour, theme::CURVE_WIDTH),
                smooth: true,
            });
        }
        for (x, y) in points {
            s.push(Prim::Circle { cx: x, cy: y, r: 2.5, fill: colour, stroke: None });
        }
    }
    for c in layout.columns.iter().filter(|c| c.diverging || c.merging) {
        let colour = if c.diverging { theme::DIVERGING } else { theme::MERGING };
        let y = centre_y + c.centred()[1];
        s.push(Prim::Circle {
            cx: c.x,
            cy: y,
            r: 6.0,
            fill: theme::BACKGROUND,
            stroke: Some(Stroke::solid(colour, 2.0)),
        });
        s.push(Prim::Circle { cx: c.x, cy: y, r: 2.5, fill: colour, stroke: None });
    }
    if layout.columns.is_empty() {
        s.text(width / 2.0, centre_y, "no gated layers", theme::TEXT_SIZE, theme::MUTED, Anchor::Middle);
    }

    // Mini-map of the whole network.
    let mini_w = width - 32.0;
    let mini = minimap(&session.analysis, graph, mini_w, MINI_HEIGHT - 12.0);
    let (mx, my) = (16.0, mini_top);
    s.text(mx, my - 6.0, "whole network", theme::SMALL, theme::MUTED, Anchor::Start);
    s.push(Prim::Rect {
        x: mx,
        y: my,
        w: mini_w,
        h: MINI_HEIGHT,
        fill: Some((theme::BAND_ALT, 1.0)),
        stroke: Some(Stroke::solid(theme::RULE, 1.0)),
    });
    for (i, (_, x0, x1)) in mini.stages.iter().enumerate() {
        if i % 2 == 1 {
            s.push(Prim::Rect {
                x: mx + x0,
                y: my,
                w: x1 - x0,
                h: MINI_HEIGHT,
                fill: Some((theme::BAND, 1.0)),
                stroke: None,
            });
        }
    }
    let mid = my + MINI_HEIGHT / 2.0;
    for role in Role::ALL {
        let points: Vec<(f32, f32)> =
            mini.xs.iter().zip(&mini.offsets).map(|(x, o)| (mx + x, mid + o[role.index()])).collect();
        if points.len() >= 2 {
            s.push(Prim::Line { points, stroke: Stroke::solid(theme::role(role), 1.5), smooth: false });
        }
    }
    for (l, colour) in [(session.analysis.diverging, theme::DIVERGING), (session.analysis.merging, theme::MERGING)] {
        if let Some(x) = l.and_then(|l| mini.xs.get(l)) {
            s.push(Prim::Line {
                points: vec![(mx + x, my), (mx + x, my + MINI_HEIGHT)],
                stroke: Stroke::solid(colour, 1.5),
                smooth: false,
            });
        }
    }

    // Footer: the numbers behind the picture.
    let a = &session.analysis;
    let point = |p: Option<usize>| p.and_then(|l| graph.layers.get(l)).map_or("none".to_owned(), |l| l.name.clone());
    s.text(
        16.0,
        height - 14.0,
        format!(
            "diverging: {} · merging: {} · pattern (r = {}): {} ({} of {} rising) · distance {:?} · {} of {} layers shown as columns",
            point(a.diverging),
            point(a.merging),
            a.pattern.r,
            if a.pattern.holds { "holds" } else { "does not hold" },
            a.pattern.n_l,
            a.pattern.r,
            a.form,
            layout.columns.len(),
            graph.layers.len(),
        ),
        theme::SMALL,
        theme::MUTED,
        Anchor::Start,
    );
    (s, RiverFrame { layout, centre_y, plot: (plot_top, plot_bottom), minimap: (mini, (mx, my)) })
}

impl RiverFrame {
    /// The column under a scene point, if any (anywhere in the plot's height).
    pub fn column_at(&self, x: f32, y: f32) -> Option<usize> {
        if y < TOP || y > self.plot.1 {
            return None;
        }
        self.layout.column_at(x, params().column_gap / 2.0)
    }

    /// The layer under a point of the mini-map, if the point is on it.
    pub fn minimap_layer_at(&self, x: f32, y: f32) -> Option<usize> {
        let (m, (mx, my)) = &self.minimap;
        if x < *mx || x > mx + m.width || y < *my || y > my + MINI_HEIGHT {
            return None;
        }
        m.layer_at(x - mx)
    }

    /// The stage band whose header is under a point (click to collapse).
    pub fn stage_header_at(&self, x: f32, y: f32) -> Option<&str> {
        if !(TOP..TOP + BAND_HEADER).contains(&y) {
            return None;
        }
        self.layout.stages.iter().find(|b| x >= b.x0 && x <= b.x1).map(|b| b.name.as_str())
    }

    /// Hover text of a column: its name and the three distances.
    pub fn describe(&self, column: usize) -> Option<String> {
        let c = self.layout.columns.get(column)?;
        let what = match c.layers.len() {
            1 => c.label.clone(),
            n => format!("{} (mean of {n} layers)", c.label),
        };
        Some(format!(
            "{what}: d(adv,src) = {:.3} · d(adv,tgt) = {:.3} · d(src,tgt) = {:.3}",
            c.adv_src, c.adv_tgt, c.src_tgt
        ))
    }
}
