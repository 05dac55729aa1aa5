//! The neuron level: the activation maps of one feature map for the three
//! images on one colour scale, the learned features (top patches) and the
//! selected region of neurons.

use std::io::Cursor;
use std::sync::Arc;

use aevis_shared::layout::colour::{normalise, sequential};
use aevis_shared::protocol::{NeuronDetail, Region, Role, SessionResult};

use super::{class_name, image_caption};
use crate::scene::{Anchor, Prim, Scene, Stroke};
use crate::theme;

/// Side of the larger dimension of a drawn activation map.
pub const MAP_SIZE: f32 = 220.0;
const GAP: f32 = 28.0;
const TOP: f32 = 140.0;
const LEFT: f32 = 16.0;

/// One activation map as an RGB PNG, one pixel per neuron, coloured on the
/// shared `(min, max)` scale. Missing or NaN values are drawn as the minimum.
pub fn heatmap_png(map: &[f32], height: usize, width: usize, scale: (f32, f32)) -> Vec<u8> {
    let (h, w) = (height.max(1), width.max(1));
    let mut img = image::RgbImage::new(w as u32, h as u32);
    for (i, px) in img.pixels_mut().enumerate() {
        let v = map.get(i).copied().unwrap_or(f32::NAN);
        *px = image::Rgb(sequential(normalise(v, scale.0, scale.1)).to_u8());
    }
    let mut out = Cursor::new(Vec::new());
    // Encoding an in-memory RGB buffer cannot fail short of running out of memory.
    if img.write_to(&mut out, image::ImageFormat::Png).is_err() {
        return Vec::new();
    }
    out.into_inner()
}

/// Where the three maps are drawn: `(x, y, w, h)` in scene units, in [`Role::ALL`] order.
pub fn map_rects(detail: &NeuronDetail) -> [(f32, f32, f32, f32); 3] {
    let (h, w) = (detail.height.max(1) as f32, detail.width.max(1) as f32);
    let k = MAP_SIZE / h.max(w);
    let (mw, mh) = (w * k, h * k);
    [0, 1, 2].map(|i| (LEFT + i as f32 * (MAP_SIZE + GAP), TOP, mw, mh))
}

/// The neuron under a scene point: `(role index, row, column)`.
pub fn neuron_at(detail: &NeuronDetail, x: f32, y: f32) -> Option<(usize, usize, usize)> {
    if detail.height == 0 || detail.width == 0 {
        return None;
    }
    map_rects(detail).iter().enumerate().find_map(|(i, &(rx, ry, rw, rh))| {
        let inside = x >= rx && x < rx + rw && y >= ry && y < ry + rh;
        inside.then(|| {
            let row = (((y - ry) / rh * detail.height as f32) as usize).min(detail.height - 1);
            let col = (((x - rx) / rw * detail.width as f32) as usize).min(detail.width - 1);
            (i, row, col)
        })
    })
}

/// Builds the neuron scene. `session` supplies the input images and classes
/// for the captions; `region` is the selection drawn on every map.
pub fn scene(
    detail: &NeuronDetail,
    layer_name: &str,
    session: Option<&SessionResult>,
    classes: &[String],
    region: Option<Region>,
) -> Scene {
    let patches_top = TOP + MAP_SIZE + 64.0;
    let height = patches_top + if detail.learned.is_empty() { 30.0 } else { 110.0 };
    let width = LEFT * 2.0 + 3.0 * MAP_SIZE + 2.0 * GAP + 180.0;
    let mut s = Scene::new(width, height, theme::BACKGROUND);
    s.text(
        LEFT,
        24.0,
        format!("{layer_name} channel {} — activation maps ({} × {})", detail.channel, detail.height, detail.width),
        theme::TITLE,
        theme::TEXT,
        Anchor::Start,
    );
    let rects = map_rects(detail);
    for role in Role::ALL {
        let i = role.index();
        let (x, y, w, h) = rects[i];
        // The input image above its map, with its class.
        if let Some(sess) = session {
            let img = &sess.path(role).image;
            if !img.png.is_empty() {
                s.push(Prim::Image { x, y: 40.0, w: 64.0, h: 64.0, png: Arc::new(img.png.clone()), pixelated: true });
            }
            s.text(x + 72.0, 56.0, theme::role_name(role), theme::TEXT_SIZE, theme::role(role), Anchor::Start);
            s.text(x + 72.0, 74.0, class_name(classes, img.predicted), theme::SMALL, theme::TEXT, Anchor::Start);
            // Confidence and origin on lines of their own: an attack's origin is
            // long enough to run into the next image's column on one line.
            s.text(x + 72.0, 90.0, format!("p = {:.2}", img.confidence), theme::SMALL, theme::MUTED, Anchor::Start);
            s.text(x + 72.0, 105.0, image_caption(img), theme::SMALL, theme::MUTED, Anchor::Start);
        } else {
            s.text(x, 74.0, theme::role_name(role), theme::TEXT_SIZE, theme::role(role), Anchor::Start);
        }
        if detail.height == 0 || detail.width == 0 {
            s.text(x + w / 2.0, y + h / 2.0, "empty map", theme::TEXT_SIZE, theme::MUTED, Anchor::Middle);
            continue;
        }
        let png = heatmap_png(&detail.maps[i], detail.height, detail.width, detail.scale);
        s.push(Prim::Image { x, y, w, h, png: Arc::new(png), pixelated: true });
        s.push(Prim::Rect { x, y, w, h, fill: None, stroke: Some(Stroke::solid(theme::role(role), 2.0)) });
        let max = detail.maps[i].iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
        let max = if max.is_finite() { format!("{max:.3}") } else { "—".to_owned() };
        s.text(x, y + h + 16.0, format!("max activation {max}"), theme::SMALL, theme::MUTED, Anchor::Start);
        if let Some(r) = region {
            let (kx, ky) = (w / detail.width as f32, h / detail.height as f32);
            let (x0, x1) = (r.x0.min(detail.width) as f32, r.x1.min(detail.width) as f32);
            let (y0, y1) = (r.y0.min(detail.height) as f32, r.y1.min(detail.height) as f32);
            if x1 > x0 && y1 > y0 {
                s.push(Prim::Rect {
                    x: x + x0 * kx,
                    y: y + y0 * ky,
                    w: (x1 - x0) * kx,
                    h: (y1 - y0) * ky,
                    fill: Some((theme::HIGHLIGHT, 0.15)),
                    stroke: Some(Stroke::solid(theme::HIGHLIGHT, 2.0)),
                });
            }
        }
    }
    if let Some(r) = region {
        s.text(
            LEFT,
            TOP + MAP_SIZE + 36.0,
            format!("selected neurons: rows {}..{}, columns {}..{}", r.y0, r.y1, r.x0, r.x1),
            theme::SMALL,
            theme::TEXT,
            Anchor::Start,
        );
    }

    // Shared colour scale.
    let bx = LEFT + 3.0 * MAP_SIZE + 2.0 * GAP + 24.0;
    s.text(bx, TOP - 8.0, "activation", theme::SMALL, theme::TEXT, Anchor::Start);
    for i in 0..20 {
        let t = 1.0 - i as f32 / 19.0;
        s.fill_rect(bx, TOP + i as f32 * (MAP_SIZE / 20.0), 18.0, MAP_SIZE / 20.0 + 0.5, sequential(t));
    }
    s.text(bx + 24.0, TOP + 10.0, format!("{:.3}", detail.scale.1), theme::SMALL, theme::MUTED, Anchor::Start);
    s.text(bx + 24.0, TOP + MAP_SIZE, format!("{:.3}", detail.scale.0), theme::SMALL, theme::MUTED, Anchor::Start);

    if !detail.learned.is_empty() {
        s.text(LEFT, patches_top, "learned features (top patches)", theme::TEXT_SIZE, theme::TEXT, Anchor::Start);
        for (k, p) in detail.learned.iter().enumerate() {
            let x = LEFT + k as f32 * 76.0;
            if !p.png.is_empty() {
                s.push(Prim::Image {
                    x,
                    y: patches_top + 10.0,
                    w: 64.0,
                    h: 64.0,
                    png: Arc::new(p.png.clone()),
                    pixelated: false,
                });
            }
            s.text(
                x,
                patches_top + 90.0,
                format!("#{} · {:.2}", p.image, p.activation),
                9.0,
                theme::MUTED,
                Anchor::Start,
            );
        }
    }
    s
}
