//! Screen layouts of the views, as plain functions: the river (§5.2) and the
//! treemap of critical feature maps (§5.3, Eq. 6), and the colour scales.
//!
//! Nothing here knows about a GUI or a file format: the client turns these
//! layouts into canvas drawings and into SVG/PNG.

pub mod colour;
pub mod river;
pub mod treemap;
