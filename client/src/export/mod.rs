//! Headless export: each view as SVG (written here) and PNG (that SVG
//! rendered with resvg, with the bundled Fira Sans so no system font is
//! needed), plus the session as JSON.
//!
//! ```no_run
//! # fn demo(session: &aevis_shared::protocol::SessionResult, graph: &aevis_shared::graph::LayerGraph,
//! #         layer: &aevis_shared::protocol::LayerDetail, neuron: &aevis_shared::protocol::NeuronDetail) {
//! let classes = ["airplane".to_string(), "automobile".to_string()];
//! let files = aevis_client::export::render_all(session, graph, &classes, layer, neuron, None, "out".as_ref(), 2.0).unwrap();
//! assert_eq!(files.len(), 7); // river, layer, neuron × (svg, png) + session.json
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use aevis_shared::graph::LayerGraph;
use aevis_shared::layout::river::Collapse;
use aevis_shared::protocol::{
    ContributionResult, ContributionTarget, LayerDetail, NeuronDetail, Region, SessionResult,
};
use resvg::{tiny_skia, usvg};

use crate::scene::{FONT_FAMILY, Scene};
use crate::view::layer::{self, Fill};
use crate::view::{neuron, river};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The SVG did not parse (a bug in the scene writer).
    #[error("the {view} view produced SVG that does not parse: {reason}")]
    Svg {
        /// Which view.
        view: String,
        /// What usvg said.
        reason: String,
    },
    /// The image would be empty or too large to allocate.
    #[error("cannot render a {width}×{height} pixel image (scale {scale})")]
    Size {
        /// Pixel width.
        width: u32,
        /// Pixel height.
        height: u32,
        /// The scale asked for.
        scale: f32,
    },
    /// PNG encoding failed.
    #[error("could not encode the PNG: {0}")]
    Png(String),
    /// JSON encoding failed.
    #[error("could not encode the session as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing a file failed.
    #[error("could not write {path}: {source}")]
    Io {
        /// The error.
        source: std::io::Error,
        /// The file.
        path: PathBuf,
    },
}

/// Largest side of a rendered PNG, in pixels.
pub const MAX_SIDE: u32 = 16_384;

/// The font database used for every render: only the bundled Fira Sans.
pub fn fontdb() -> Arc<usvg::fontdb::Database> {
    static DB: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_font_data(iced::advanced::graphics::text::FIRA_SANS_REGULAR.to_vec());
        db.set_sans_serif_family(FONT_FAMILY);
        Arc::new(db)
    })
    .clone()
}

/// Parses an SVG document with the bundled font.
pub fn parse_svg(svg: &str) -> Result<usvg::Tree, String> {
    let opts = usvg::Options { font_family: FONT_FAMILY.to_owned(), fontdb: fontdb(), ..usvg::Options::default() };
    usvg::Tree::from_str(svg, &opts).map_err(|e| e.to_string())
}

/// Renders an SVG document to PNG bytes at `scale` pixels per SVG unit.
pub fn svg_to_png(svg: &str, scale: f32, view: &str) -> Result<Vec<u8>, ExportError> {
    let tree = parse_svg(svg).map_err(|reason| ExportError::Svg { view: view.to_owned(), reason })?;
    let scale = if scale.is_finite() && scale > 0.0 { scale } else { 1.0 };
    let size = tree.size();
    let (w, h) = ((size.width() * scale).ceil() as u32, (size.height() * scale).ceil() as u32);
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(ExportError::Size { width: w, height: h, scale });
    }
    let mut pixmap = tiny_skia::Pixmap::new(w, h).ok_or(ExportError::Size { width: w, height: h, scale })?;
    resvg::render(&tree, tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| ExportError::Png(e.to_string()))
}

/// What to export, beyond the session itself.
#[derive(Debug, Clone)]
pub struct ExportInput<'a> {
    /// The session.
    pub session: &'a SessionResult,
    /// Its model's layer graph.
    pub graph: &'a LayerGraph,
    /// Class names of the model (may be empty).
    pub classes: &'a [String],
    /// Which stages and blocks the river collapses.
    pub collapse: Collapse,
    /// The layer of the layer view, if any.
    pub layer: Option<&'a LayerDetail>,
    /// How its cells are filled.
    pub fill: Fill,
    /// The feature map of the neuron view, if any.
    pub neuron: Option<&'a NeuronDetail>,
    /// The selected region of that feature map.
    pub region: Option<Region>,
    /// A contribution result; fills the layer view when computed for that layer.
    pub contribution: Option<&'a ContributionResult>,
}

fn write(path: PathBuf, bytes: &[u8]) -> Result<PathBuf, ExportError> {
    std::fs::write(&path, bytes).map_err(|source| ExportError::Io { source, path: path.clone() })?;
    Ok(path)
}

/// Writes `NAME.svg` and `NAME.png` of a scene into `dir`.
pub fn write_scene(scene: &Scene, name: &str, dir: &Path, scale: f32) -> Result<Vec<PathBuf>, ExportError> {
    let svg = scene.to_svg();
    let png = svg_to_png(&svg, scale, name)?;
    Ok(vec![write(dir.join(format!("{name}.svg")), svg.as_bytes())?, write(dir.join(format!("{name}.png")), &png)?])
}

/// Writes every view that has data, and `session.json`, into `out_dir`
/// (created if missing). Returns the files written.
pub fn export(input: &ExportInput<'_>, out_dir: &Path, scale: f32) -> Result<Vec<PathBuf>, ExportError> {
    std::fs::create_dir_all(out_dir).map_err(|source| ExportError::Io { source, path: out_dir.to_owned() })?;
    let mut files = Vec::new();
    let (river_scene, _) = river::scene(input.session, input.graph, &input.collapse, input.classes);
    files.extend(write_scene(&river_scene, "river", out_dir, scale)?);
    if let Some(detail) = input.layer {
        let (scene, _) = layer::scene(detail, input.fill, input.contribution);
        files.extend(write_scene(&scene, "layer", out_dir, scale)?);
    }
    if let Some(detail) = input.neuron {
        let name =
            input.graph.layers.get(detail.layer).map_or_else(|| format!("layer {}", detail.layer), |l| l.name.clone());
        let scene = neuron::scene(detail, &name, Some(input.session), input.classes, input.region);
        files.extend(write_scene(&scene, "neuron", out_dir, scale)?);
    }
    let json = serde_json::to_vec_pretty(input.session)?;
    files.push(write(out_dir.join("session.json"), &json)?);
    Ok(files)
}

/// Writes `river`, `layer` and `neuron` as SVG and PNG, and `session.json`.
///
/// The layer view shows the contribution (dotted) when `contribution` was
/// computed for `layer_detail`'s layer, else the activation difference
/// adversarial − source; the neuron view marks the contribution's region
/// when it targets that feature map. `classes` are the model's class names
/// (`ModelInfo::classes` of `/v1/info`); the views fall back to "class N"
/// where a name is missing.
#[allow(clippy::too_many_arguments)]
pub fn render_all(
    session: &SessionResult,
    graph: &LayerGraph,
    classes: &[String],
    layer_detail: &LayerDetail,
    neuron_detail: &NeuronDetail,
    contribution: Option<&ContributionResult>,
    out_dir: &Path,
    scale: f32,
) -> Result<Vec<PathBuf>, ExportError> {
    let fill = if layer::contribution_applies(layer_detail, contribution) {
        Fill::Contribution { role: aevis_shared::protocol::Role::Adversarial }
    } else {
        Fill::default()
    };
    let region = contribution.and_then(|c| match c.request.target {
        ContributionTarget::FeatureMap { layer, channel, region }
            if layer == neuron_detail.layer && channel == neuron_detail.channel =>
        {
            region
        }
        _ => None,
    });
    let keep: Vec<usize> = [session.analysis.diverging, session.analysis.merging].into_iter().flatten().collect();
    let input = ExportInput {
        session,
        graph,
        classes,
        collapse: Collapse::auto(graph, 60, &keep),
        layer: Some(layer_detail),
        fill,
        neuron: Some(neuron_detail),
        region,
        contribution,
    };
    export(&input, out_dir, scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;
    use crate::scene::{Anchor, Prim};
    use aevis_shared::layout::colour::Rgb;

    fn png_size(bytes: &[u8]) -> (u32, u32) {
        let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png).expect("a PNG");
        (img.width(), img.height())
    }

    #[test]
    fn render_all_writes_every_view() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let session = sample::session();
        let graph = sample::graph();
        let layer = sample::layer_detail(4);
        let neuron = sample::neuron_detail(6, 2);
        let contribution = sample::contribution(6, 2, 4);
        let files =
            render_all(&session, &graph, &sample::classes(), &layer, &neuron, Some(&contribution), &out, 2.0).unwrap();
        let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(
            names,
            ["river.svg", "river.png", "layer.svg", "layer.png", "neuron.svg", "neuron.png", "session.json"]
        );
        for view in ["river", "layer", "neuron"] {
            let svg = std::fs::read_to_string(out.join(format!("{view}.svg"))).unwrap();
            let tree = parse_svg(&svg).unwrap_or_else(|e| panic!("{view}.svg does not parse: {e}"));
            let (w, h) = (tree.size().width(), tree.size().height());
            let png = std::fs::read(out.join(format!("{view}.png"))).unwrap();
            assert_eq!(png_size(&png), ((w * 2.0).ceil() as u32, (h * 2.0).ceil() as u32), "{view}");
        }
        let (river_scene, _) = river::scene(&session, &graph, &Collapse::none(), &[]);
        assert_eq!(
            png_size(&std::fs::read(out.join("river.png")).unwrap()),
            ((river_scene.width * 2.0) as u32, (river_scene.height * 2.0) as u32)
        );
        // The contribution was for layer 4: the layer view is dotted, the neuron view shows the region.
        let layer_svg = std::fs::read_to_string(out.join("layer.svg")).unwrap();
        assert!(layer_svg.contains("url(#dots"), "contribution drawn dotted");
        assert!(layer_svg.contains("top contributors"));
        // Class names, not "class N", in the river legend and above the neuron maps.
        let river_svg = std::fs::read_to_string(out.join("river.svg")).unwrap();
        assert!(river_svg.contains(": cat (") && river_svg.contains(": dog ("), "class names in the legend");
        assert!(!river_svg.contains("class 3"));
        let neuron_svg = std::fs::read_to_string(out.join("neuron.svg")).unwrap();
        assert!(neuron_svg.contains(">cat<"), "class name above the source map");
        assert!(neuron_svg.contains("selected neurons: rows 2..5, columns 1..4"));
        assert!(neuron_svg.contains("data:image/png;base64,"));
        let json: SessionResult = serde_json::from_slice(&std::fs::read(out.join("session.json")).unwrap()).unwrap();
        assert_eq!(json, session);
    }

    #[test]
    fn text_renders_with_the_bundled_font() {
        // A black word on white: some pixels must turn dark, which needs a font.
        let mut s = Scene::new(120.0, 40.0, Rgb::new(1.0, 1.0, 1.0));
        s.push(Prim::Text {
            x: 4.0,
            y: 30.0,
            text: "datapath".into(),
            size: 24.0,
            colour: Rgb::new(0.0, 0.0, 0.0),
            anchor: Anchor::Start,
        });
        let png = svg_to_png(&s.to_svg(), 1.0, "test").unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgba8();
        let dark = img.pixels().filter(|p| p.0[0] < 100).count();
        assert!(dark > 100, "only {dark} dark pixels: text did not render");
        assert!(fontdb().faces().any(|f| f.families.iter().any(|(n, _)| n == FONT_FAMILY)));
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let mut session = sample::session();
        session.analysis.adv_src = vec![f32::NAN; 2];
        session.analysis.src_tgt.clear();
        session.analysis.diverging = Some(99);
        let graph = LayerGraph { model: "empty".into(), input: [3, 1, 1], num_classes: 0, layers: vec![] };
        let mut layer = sample::layer_detail(0);
        layer.regions = aevis_shared::sets::SetRegions::new(&[], &[], &[]);
        layer.max_activation = Default::default();
        let mut neuron = sample::neuron_detail(0, 0);
        neuron.height = 0;
        neuron.maps = Default::default();
        neuron.scale = (f32::NAN, f32::NAN);
        let dir = tempfile::tempdir().unwrap();
        let files = render_all(&session, &graph, &[], &layer, &neuron, None, dir.path(), 1.0).unwrap();
        assert_eq!(files.len(), 7);
        assert!(std::fs::read_to_string(dir.path().join("layer.svg")).unwrap().contains("no critical feature maps"));
        let e = svg_to_png("<svg", 1.0, "bad").unwrap_err();
        assert!(matches!(e, ExportError::Svg { .. }), "{e}");
        let huge = Scene::new(100_000.0, 10.0, Rgb::new(1.0, 1.0, 1.0));
        assert!(matches!(svg_to_png(&huge.to_svg(), 1.0, "huge"), Err(ExportError::Size { .. })));
    }
}
