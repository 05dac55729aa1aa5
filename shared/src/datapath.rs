//! Datapaths and the numbers the paper computes from them: critical sets,
//! per-layer distances (Eq. 5), `diff(l)` (Eq. 9), the diverging–merging
//! pattern test (Eq. 10), diverging and merging points, similarity and the
//! Top-K score of §6.1.

use serde::{Deserialize, Serialize};

/// Gates of one image, one vector per gated layer (values in `[0, 1]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Datapath {
    /// `gates[l][c]` is the gate of channel `c` of gated layer `l`.
    pub gates: Vec<Vec<f32>>,
}

impl Datapath {
    /// All gates at 1: the whole network.
    pub fn ones(widths: &[usize]) -> Self {
        Self { gates: widths.iter().map(|&w| vec![1.0; w]).collect() }
    }

    /// Builds a datapath from one flat vector laid out layer after layer.
    ///
    /// Returns `None` when the length is not the sum of `widths`.
    pub fn from_flat(flat: &[f32], widths: &[usize]) -> Option<Self> {
        if flat.len() != widths.iter().sum::<usize>() {
            return None;
        }
        let mut gates = Vec::with_capacity(widths.len());
        let mut at = 0;
        for &w in widths {
            gates.push(flat[at..at + w].to_vec());
            at += w;
        }
        Some(Self { gates })
    }

    /// The gates laid out layer after layer.
    pub fn flat(&self) -> Vec<f32> {
        self.gates.iter().flatten().copied().collect()
    }

    /// Critical set of each layer: the channels with gate `>= tau`.
    pub fn critical(&self, tau: f32) -> Vec<Vec<usize>> {
        self.gates
            .iter()
            .map(|g| (0..g.len()).filter(|&c| g[c] >= tau).collect())
            .collect()
    }

    /// The binarised datapath: 1 where the gate is `>= tau`, else 0.
    pub fn binarised(&self, tau: f32) -> Self {
        Self {
            gates: self
                .gates
                .iter()
                .map(|g| g.iter().map(|&z| if z >= tau { 1.0 } else { 0.0 }).collect())
                .collect(),
        }
    }

    /// Fraction of channels kept (gate `>= tau`) per layer.
    pub fn kept_per_layer(&self, tau: f32) -> Vec<f32> {
        self.gates
            .iter()
            .map(|g| {
                if g.is_empty() {
                    0.0
                } else {
                    g.iter().filter(|&&z| z >= tau).count() as f32 / g.len() as f32
                }
            })
            .collect()
    }

    /// Fraction of all channels kept (gate `>= tau`).
    pub fn kept_overall(&self, tau: f32) -> f32 {
        let total: usize = self.gates.iter().map(Vec::len).sum();
        if total == 0 {
            return 0.0;
        }
        let kept: usize = self.gates.iter().map(|g| g.iter().filter(|&&z| z >= tau).count()).sum();
        kept as f32 / total as f32
    }
}

/// How the per-layer distance is normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DistanceForm {
    /// The paper's form: `||z_a(l) - z_b(l)||₂`.
    #[default]
    L2,
    /// `||z_a(l) - z_b(l)||₂ / sqrt(channels)`, so layers of different width compare fairly.
    Rms,
}

/// `d_l(a, b)` for every layer. Layers must have equal widths in `a` and `b`.
pub fn layer_distances(a: &Datapath, b: &Datapath, form: DistanceForm) -> Vec<f32> {
    a.gates
        .iter()
        .zip(&b.gates)
        .map(|(x, y)| {
            let sq: f32 = x.iter().zip(y).map(|(p, q)| (p - q) * (p - q)).sum();
            match form {
                DistanceForm::L2 => sq.sqrt(),
                DistanceForm::Rms => {
                    if x.is_empty() {
                        0.0
                    } else {
                        (sq / x.len() as f32).sqrt()
                    }
                }
            }
        })
        .collect()
}

/// `||z_a - z_b||₂` over all gates.
pub fn total_distance(a: &Datapath, b: &Datapath) -> f32 {
    layer_distances(a, b, DistanceForm::L2).iter().map(|d| d * d).sum::<f32>().sqrt()
}

/// Datapath similarity `1 / ||z_a - z_b||₂`; identical datapaths get `f32::MAX`.
pub fn similarity(a: &Datapath, b: &Datapath) -> f32 {
    let d = total_distance(a, b);
    if d <= f32::EPSILON { f32::MAX } else { 1.0 / d }
}

/// `diff(l) = d_l(adv, src) - d_l(adv, tgt)` (Eq. 9).
pub fn diff_series(adv_src: &[f32], adv_tgt: &[f32]) -> Vec<f32> {
    adv_src.iter().zip(adv_tgt).map(|(a, b)| a - b).collect()
}

/// Outcome of the diverging–merging pattern test (Eq. 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternTest {
    /// `n_l`: how many of the last `r` layers increase `diff` over their predecessor.
    pub n_l: usize,
    /// The `r` the test used.
    pub r: usize,
    /// `diff` reaches its maximum at the last layer.
    pub peak_at_last: bool,
    /// `n_l == r` and the peak is at the last layer.
    pub holds: bool,
}

/// The diverging–merging pattern test of Eq. 10 over the last `r` layers.
///
/// With `m` layers (1-based), `n_l = Σ_{i=m-r+1}^{m} [diff(i) > diff(i-1)]`;
/// the pattern holds when `n_l = r` and `diff(m)` is the maximum. A series
/// shorter than `r + 1` layers never holds.
pub fn pattern_test(diff: &[f32], r: usize) -> PatternTest {
    let m = diff.len();
    let start = m.saturating_sub(r).max(1);
    let n_l = (start..m).filter(|&i| diff[i] > diff[i - 1]).count();
    let peak_at_last = m > 0 && diff.iter().all(|&d| d <= diff[m - 1]);
    let holds = r > 0 && m > r && n_l == r && peak_at_last;
    PatternTest { n_l, r, peak_at_last, holds }
}

/// Diverging point: the first layer after which `d(adv, src)` never decreases
/// again and ends higher than it is there. `None` when it never grows.
pub fn diverging_point(adv_src: &[f32]) -> Option<usize> {
    let m = adv_src.len();
    if m < 2 {
        return None;
    }
    // Walk back from the end while the series is non-decreasing.
    let mut l = m - 1;
    while l > 0 && adv_src[l - 1] <= adv_src[l] {
        l -= 1;
    }
    (adv_src[m - 1] > adv_src[l]).then_some(l)
}

/// Merging point: where `d(adv, tgt)` reaches its minimum after its peak
/// (first index on ties). `None` when it never decreases after the peak.
pub fn merging_point(adv_tgt: &[f32]) -> Option<usize> {
    if adv_tgt.is_empty() {
        return None;
    }
    let peak = argmax_first(adv_tgt);
    let after = &adv_tgt[peak..];
    let min = argmin_first(after) + peak;
    (adv_tgt[min] < adv_tgt[peak]).then_some(min)
}

fn argmax_first(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn argmin_first(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x < v[best] {
            best = i;
        }
    }
    best
}

/// The rules behind [`diverging_point`] and [`merging_point`], reported with results.
pub const POINT_RULES: &str = "diverging: first layer after which d(adv,src) never decreases and ends higher; \
merging: arg-min of d(adv,tgt) after its peak";

/// Everything the views need about one triplet, computed from three datapaths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TripletAnalysis {
    /// `d_l(adv, src)` per layer.
    pub adv_src: Vec<f32>,
    /// `d_l(adv, tgt)` per layer.
    pub adv_tgt: Vec<f32>,
    /// `d_l(src, tgt)` per layer.
    pub src_tgt: Vec<f32>,
    /// `diff(l)`.
    pub diff: Vec<f32>,
    /// The pattern test.
    pub pattern: PatternTest,
    /// Diverging point (layer index).
    pub diverging: Option<usize>,
    /// Merging point (layer index).
    pub merging: Option<usize>,
    /// The distance form used.
    pub form: DistanceForm,
}

impl TripletAnalysis {
    /// Distances, `diff`, the pattern test and the points of one triplet.
    pub fn new(adv: &Datapath, src: &Datapath, tgt: &Datapath, form: DistanceForm, r: usize) -> Self {
        let adv_src = layer_distances(adv, src, form);
        let adv_tgt = layer_distances(adv, tgt, form);
        let src_tgt = layer_distances(src, tgt, form);
        let diff = diff_series(&adv_src, &adv_tgt);
        let pattern = pattern_test(&diff, r);
        Self {
            diverging: diverging_point(&adv_src),
            merging: merging_point(&adv_tgt),
            adv_src,
            adv_tgt,
            src_tgt,
            diff,
            pattern,
            form,
        }
    }
}

/// Index of the representative target: the one most similar to the adversarial.
/// Ties keep the first. `None` for no targets.
pub fn representative_target(adv: &Datapath, targets: &[Datapath]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, t) in targets.iter().enumerate() {
        let s = similarity(adv, t);
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

/// Top-K count of one adversarial example: sort its targets by similarity
/// (descending, stable) and count the patterns among the first `k`.
///
/// `targets` holds `(similarity, pattern holds)` per target.
pub fn top_k_count(targets: &[(f32, bool)], k: usize) -> usize {
    let mut order: Vec<usize> = (0..targets.len()).collect();
    order.sort_by(|&a, &b| targets[b].0.total_cmp(&targets[a].0));
    order.iter().take(k).filter(|&&i| targets[i].1).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dp(v: &[&[f32]]) -> Datapath {
        Datapath { gates: v.iter().map(|x| x.to_vec()).collect() }
    }

    #[test]
    fn distances_by_hand() {
        let a = dp(&[&[1.0, 0.0, 1.0, 1.0], &[0.0, 0.0]]);
        let b = dp(&[&[0.0, 0.0, 1.0, 0.0], &[1.0, 1.0]]);
        let l2 = layer_distances(&a, &b, DistanceForm::L2);
        assert!((l2[0] - 2f32.sqrt()).abs() < 1e-6);
        assert!((l2[1] - 2f32.sqrt()).abs() < 1e-6);
        let rms = layer_distances(&a, &b, DistanceForm::Rms);
        assert!((rms[0] - (2.0f32 / 4.0).sqrt()).abs() < 1e-6);
        assert!((rms[1] - 1.0).abs() < 1e-6);
        assert!((total_distance(&a, &b) - 2.0).abs() < 1e-6);
        assert!((similarity(&a, &b) - 0.5).abs() < 1e-6);
        assert_eq!(similarity(&a, &a), f32::MAX);
    }

    #[test]
    fn pattern_by_hand() {
        // m = 6, r = 3: i = 3,4,5 (0-based) must each increase; last is max.
        let d = [0.5, 0.9, 0.1, 0.2, 0.3, 1.0];
        let p = pattern_test(&d, 3);
        assert_eq!(p.n_l, 3);
        assert!(p.peak_at_last && p.holds);
        // r = 4 also checks 0.1 > 0.9: fails once.
        let p = pattern_test(&d, 4);
        assert_eq!(p.n_l, 3);
        assert!(!p.holds);
        // All increasing but an earlier layer is higher than the last.
        let d = [2.0, 0.0, 0.1, 0.2, 0.3];
        let p = pattern_test(&d, 3);
        assert_eq!(p.n_l, 3);
        assert!(!p.peak_at_last && !p.holds);
        // Too short for r.
        assert!(!pattern_test(&[0.0, 1.0], 2).holds);
        assert!(pattern_test(&[0.0, 1.0, 2.0], 2).holds);
    }

    #[test]
    fn points_by_hand() {
        assert_eq!(diverging_point(&[0.0, 0.0, 0.5, 0.4, 0.4, 0.9, 1.2]), Some(3));
        assert_eq!(diverging_point(&[1.0, 0.5, 0.2]), None);
        assert_eq!(diverging_point(&[0.3, 0.3]), None);
        assert_eq!(merging_point(&[0.1, 2.0, 1.5, 0.2, 0.4]), Some(3));
        assert_eq!(merging_point(&[0.1, 0.2, 0.3]), None);
    }

    #[test]
    fn critical_and_kept() {
        let a = dp(&[&[0.9, 0.5, 0.49, 0.0]]);
        assert_eq!(a.critical(0.5), vec![vec![0, 1]]);
        assert_eq!(a.kept_overall(0.5), 0.5);
        assert_eq!(a.binarised(0.5).gates[0], vec![1.0, 1.0, 0.0, 0.0]);
        let flat = a.flat();
        assert_eq!(Datapath::from_flat(&flat, &[4]).unwrap(), a);
        assert!(Datapath::from_flat(&flat, &[3]).is_none());
    }

    #[test]
    fn top_k_and_representative() {
        let t = [(0.1, true), (0.9, false), (0.5, true), (0.7, true)];
        assert_eq!(top_k_count(&t, 1), 0);
        assert_eq!(top_k_count(&t, 2), 1);
        assert_eq!(top_k_count(&t, 3), 2);
        let adv = dp(&[&[1.0, 0.0]]);
        let far = dp(&[&[0.0, 1.0]]);
        let near = dp(&[&[1.0, 0.5]]);
        assert_eq!(representative_target(&adv, &[far, near]), Some(1));
    }
}
