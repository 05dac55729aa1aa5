//! The pure core of aevis: wire types, the protocol and the analysis
//! functions that need no network, GPU or GUI.
//!
//! * [`graph`] — the gated-layer graph of a model (names, widths, DAG, hierarchy);
//! * [`datapath`] — datapaths, critical sets, per-layer distances, `diff(l)`,
//!   the diverging–merging pattern test (paper Eq. 9–10), similarity;
//! * [`sets`] — the seven regions of three critical sets (paper §5.3);
//! * [`layout`] — the river (§5.2) and treemap (§5.3, Eq. 6) layouts;
//! * [`protocol`] and [`codec`] — what the daemon and the client exchange.
//!
//! ```
//! use aevis_shared::datapath::{diff_series, pattern_test};
//! // diff(l) = d(adv,src) - d(adv,tgt) rising over the last 3 layers: a pattern.
//! let adv_src = [0.0, 1.0, 2.0, 3.0, 4.0];
//! let adv_tgt = [4.0, 3.0, 2.0, 1.0, 0.5];
//! let diff = diff_series(&adv_src, &adv_tgt);
//! let p = pattern_test(&diff, 3);
//! assert!(p.holds);
//! ```

pub mod codec;
pub mod datapath;
pub mod graph;
pub mod layout;
pub mod protocol;
pub mod sets;
