//! The aevis client: the river, treemap and neuron views of a session, drawn
//! in an iced GUI over the daemon's HTTP API, or exported headless to
//! SVG/PNG.
//!
//! * [`view`] builds each view as a [`scene::Scene`] from protocol values;
//! * [`export`] writes scenes as SVG and PNG ([`export::render_all`]);
//! * [`api`] talks to the daemon (bincode over HTTP, job events);
//!
//! ```
//! use aevis_client::{sample, view};
//! let (scene, frame) = view::river::scene(&sample::session(), &sample::graph(), &Default::default(), &sample::classes());
//! assert_eq!(frame.layout.columns.len(), 9);
//! assert!(scene.to_svg().starts_with("<svg"));
//! ```

pub mod api;
pub mod export;
pub mod sample;
pub mod scene;
pub mod theme;
pub mod view;
