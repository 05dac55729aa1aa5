//! The three views as [`crate::scene::Scene`]s built from protocol values:
//! the same scene is painted by the GUI and written by the export.

pub mod layer;
pub mod neuron;
pub mod river;

use aevis_shared::protocol::SessionImage;

/// Name of a class, `class 7` when the names are not known.
pub fn class_name(classes: &[String], class: usize) -> String {
    classes.get(class).cloned().unwrap_or_else(|| format!("class {class}"))
}

/// Short caption of an image's origin.
pub fn image_caption(img: &SessionImage) -> String {
    img.origin.clone()
}
