//! The layer level: a treemap of the critical feature maps of one layer for
//! source, adversarial and target (paper §5.3, Fig. 7), filled by activation
//! difference (solid) or contribution (dotted).

use aevis_shared::layout::colour::{diverging, symmetric};
use aevis_shared::layout::treemap::{Rect, Treemap, region_label, treemap};
use aevis_shared::protocol::{ContributionResult, LayerDetail, Role};

use crate::scene::{Anchor, Prim, Scene, Stroke};
use crate::theme;

/// What fills the cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Solid fill: `acti(a) − acti(b)`, the maximum activation of each feature map.
    Activation {
        /// Minuend.
        a: Role,
        /// Subtrahend.
        b: Role,
    },
    /// Dotted fill: the contribution `z_k` of each feature map for one image.
    Contribution {
        /// Whose contributions.
        role: Role,
    },
}

impl Default for Fill {
    fn default() -> Self {
        Fill::Activation { a: Role::Adversarial, b: Role::Source }
    }
}

impl Fill {
    /// Caption of the encoding.
    pub fn caption(&self) -> String {
        match self {
            Fill::Activation { a, b } => format!(
                "solid fill: activation difference acti({}) − acti({}) (maximum activation of the feature map)",
                theme::role_name(*a),
                theme::role_name(*b)
            ),
            Fill::Contribution { role } => {
                format!("dotted fill: contribution to the selected neurons ({})", theme::role_name(*role))
            }
        }
    }
}

/// Where the parts of the layer scene are.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerFrame {
    /// The treemap, in scene coordinates.
    pub treemap: Treemap,
    /// The value behind each cell's fill, in the order of `treemap.cells`.
    pub values: Vec<f32>,
}

/// Treemap area in the layer scene.
pub const TREEMAP: Rect = Rect { x: 16.0, y: 64.0, w: 640.0, h: 440.0 };
const WIDTH: f32 = 920.0;
const HEIGHT: f32 = 560.0;

fn value(v: &[f32], ch: usize) -> f32 {
    v.get(ch).copied().filter(|x| x.is_finite()).unwrap_or(0.0)
}

/// The contribution applies to this layer (it was computed for its feature maps).
pub fn contribution_applies(detail: &LayerDetail, contribution: Option<&ContributionResult>) -> bool {
    contribution.is_some_and(|c| c.request.earlier == detail.layer)
}

/// Builds the layer scene. A contribution fill without a contribution for
/// this layer falls back to the activation difference of the adversarial
/// and the source.
pub fn scene(detail: &LayerDetail, fill: Fill, contribution: Option<&ContributionResult>) -> (Scene, LayerFrame) {
    let contribution = contribution.filter(|_| contribution_applies(detail, contribution));
    let fill = match (fill, contribution) {
        (Fill::Contribution { .. }, None) => Fill::default(),
        (f, _) => f,
    };
    let map = treemap(&detail.regions, TREEMAP, true);
    let values: Vec<f32> = map
        .cells
        .iter()
        .map(|c| match (fill, contribution) {
            (Fill::Activation { a, b }, _) => {
                value(&detail.max_activation[a.index()], c.channel)
                    - value(&detail.max_activation[b.index()], c.channel)
            }
            (Fill::Contribution { role }, Some(r)) => value(&r.contributions[role.index()], c.channel),
            (Fill::Contribution { .. }, None) => 0.0,
        })
        .collect();
    let max_abs = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));

    let mut s = Scene::new(WIDTH, HEIGHT, theme::BACKGROUND);
    let sizes: Vec<usize> = (0..3).map(|i| detail.regions.set_size(i)).collect();
    s.text(
        16.0,
        24.0,
        format!("{} (layer #{}) — critical feature maps", detail.name, detail.layer),
        theme::TITLE,
        theme::TEXT,
        Anchor::Start,
    );
    s.text(
        16.0,
        44.0,
        format!(
            "S = source ({}), A = adversarial ({}), T = target ({}) · {}",
            sizes[0],
            sizes[1],
            sizes[2],
            fill.caption()
        ),
        theme::SMALL,
        theme::MUTED,
        Anchor::Start,
    );

    if map.cells.is_empty() {
        s.push(Prim::Rect {
            x: TREEMAP.x,
            y: TREEMAP.y,
            w: TREEMAP.w,
            h: TREEMAP.h,
            fill: Some((theme::BAND_ALT, 1.0)),
            stroke: Some(Stroke::solid(theme::RULE, 1.0)),
        });
        let (cx, cy) = TREEMAP.centre();
        s.text(cx, cy, "no critical feature maps in this layer", theme::TEXT_SIZE, theme::MUTED, Anchor::Middle);
    }
    for (cell, v) in map.cells.iter().zip(&values) {
        let r = cell.rect.inset(0.5);
        s.push(Prim::Rect {
            x: r.x,
            y: r.y,
            w: r.w,
            h: r.h,
            fill: Some((theme::BAND_ALT, 1.0)),
            stroke: Some(Stroke::solid(theme::RULE, 0.5)),
        });
        let t = symmetric(*v, max_abs);
        let fh = r.h * t.abs();
        if fh > 0.0 {
            match fill {
                Fill::Activation { .. } => s.push(Prim::Rect {
                    x: r.x,
                    y: r.y + r.h - fh,
                    w: r.w,
                    h: fh,
                    fill: Some((diverging(t), 1.0)),
                    stroke: None,
                }),
                Fill::Contribution { role } => s.push(Prim::Dots {
                    x: r.x,
                    y: r.y + r.h - fh,
                    w: r.w,
                    h: fh,
                    colour: theme::role(role),
                    spacing: 4.0,
                }),
            }
        }
        if r.w >= 22.0 && r.h >= 14.0 {
            s.text(r.x + 2.0, r.y + 10.0, cell.channel.to_string(), 8.0, theme::MUTED, Anchor::Start);
        }
    }
    for b in &map.regions {
        let r = b.rect;
        s.push(Prim::Rect {
            x: r.x,
            y: r.y,
            w: r.w,
            h: r.h,
            fill: None,
            stroke: Some(Stroke::solid(theme::TEXT, 1.2)),
        });
    }
    for role in Role::ALL {
        let r = map.sets[role.index()];
        if r.area() > 0.0 {
            s.push(Prim::Rect {
                x: r.x,
                y: r.y,
                w: r.w,
                h: r.h,
                fill: None,
                stroke: Some(Stroke::solid(theme::role(role), 3.0)),
            });
        }
    }
    for b in &map.regions {
        let r = b.rect;
        if r.w >= 34.0 && r.h >= 16.0 {
            let label = format!("{} ({})", region_label(b.mask, theme::SET_NAMES, theme::SET_JOIN), b.count);
            s.push(Prim::Rect {
                x: r.x + 2.0,
                y: r.y + r.h - 15.0,
                w: (label.chars().count() as f32 * 6.2).min(r.w - 4.0),
                h: 13.0,
                fill: Some((theme::BACKGROUND, 0.85)),
                stroke: None,
            });
            s.text(r.x + 4.0, r.y + r.h - 5.0, label, theme::SMALL, theme::TEXT, Anchor::Start);
        }
    }

    // Right column: legend and the top contributors.
    let lx = TREEMAP.x + TREEMAP.w + 24.0;
    let mut y = TREEMAP.y + 8.0;
    s.text(lx, y, "sets", theme::TEXT_SIZE, theme::TEXT, Anchor::Start);
    for role in Role::ALL {
        y += 18.0;
        s.push(Prim::Rect {
            x: lx,
            y: y - 9.0,
            w: 14.0,
            h: 10.0,
            fill: None,
            stroke: Some(Stroke::solid(theme::role(role), 3.0)),
        });
        s.text(
            lx + 20.0,
            y,
            format!("{} {}", theme::SET_NAMES[role.index()], theme::role_name(role)),
            theme::SMALL,
            theme::TEXT,
            Anchor::Start,
        );
    }
    y += 28.0;
    match fill {
        Fill::Activation { .. } => {
            s.text(lx, y, "activation difference", theme::TEXT_SIZE, theme::TEXT, Anchor::Start);
            y += 10.0;
            for i in 0..=20 {
                let t = i as f32 / 10.0 - 1.0;
                s.fill_rect(lx + i as f32 * 10.0, y, 10.0, 10.0, diverging(t));
            }
            y += 22.0;
            s.text(lx, y, format!("{:.2}", -max_abs), theme::SMALL, theme::MUTED, Anchor::Start);
            s.text(lx + 105.0, y, "0", theme::SMALL, theme::MUTED, Anchor::Middle);
            s.text(lx + 210.0, y, format!("{max_abs:.2}"), theme::SMALL, theme::MUTED, Anchor::End);
        }
        Fill::Contribution { role } => {
            s.push(Prim::Dots { x: lx, y: y - 9.0, w: 24.0, h: 12.0, colour: theme::role(role), spacing: 4.0 });
            s.text(
                lx + 30.0,
                y,
                format!("contribution, full = {max_abs:.3}"),
                theme::SMALL,
                theme::TEXT,
                Anchor::Start,
            );
        }
    }
    if let Some(c) = contribution {
        y += 30.0;
        s.text(lx, y, "top contributors (channel: z)", theme::TEXT_SIZE, theme::TEXT, Anchor::Start);
        for role in Role::ALL {
            let top: Vec<String> =
                c.top[role.index()].iter().take(6).map(|(ch, z, _)| format!("{ch}: {z:.3}")).collect();
            // Three per line: four-digit channels of a wide layer would run off the scene.
            let lines: Vec<String> =
                if top.is_empty() { vec!["—".to_owned()] } else { top.chunks(3).map(|c| c.join(", ")).collect() };
            for (i, line) in lines.iter().enumerate() {
                y += if i == 0 { 18.0 } else { 15.0 };
                let (x, text) = if i == 0 {
                    (lx, format!("{}: {line}", theme::SET_NAMES[role.index()]))
                } else {
                    (lx + 14.0, line.clone())
                };
                s.text(x, y, text, theme::SMALL, theme::role(role), Anchor::Start);
            }
        }
    }
    (s, LayerFrame { treemap: map, values })
}

impl LayerFrame {
    /// Hover text of the cell under a scene point.
    pub fn describe_at(&self, x: f32, y: f32, detail: &LayerDetail) -> Option<String> {
        let i = self.treemap.cells.iter().position(|c| c.rect.contains(x, y))?;
        let cell = self.treemap.cells[i];
        let acts: Vec<String> = Role::ALL
            .iter()
            .map(|r| {
                format!("{} {:.3}", theme::SET_NAMES[r.index()], value(&detail.max_activation[r.index()], cell.channel))
            })
            .collect();
        Some(format!(
            "channel {} in {} · max activation {} · fill {:.3}",
            cell.channel,
            region_label(cell.mask, theme::SET_NAMES, theme::SET_JOIN),
            acts.join(", "),
            self.values[i]
        ))
    }
}
