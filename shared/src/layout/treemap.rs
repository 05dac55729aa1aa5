//! The treemap of the critical feature maps of one layer (paper §5.3, Fig. 7, Eq. 6).
//!
//! Three critical sets give seven regions ([`SetRegions`]). Each shared region
//! is put under the largest set that contains it, so the hierarchy is
//! *set → regions → one cell per feature map*, and every level is laid out
//! with the squarified algorithm of Bruls, Huizing and van Wijk (2000).
//! Every feature map gets the same area.
//!
//! Where the shared regions go is chosen to minimise Eq. 6: the squared
//! distance between the centre of each shared region and the mean of the
//! centres of the sets that share it. The order in which squarify visits the
//! sets (3! orders) and, inside each set, its regions (at most 4! orders) fixes
//! the positions, and the score separates by set once the set rectangles are
//! fixed, so the search is exhaustive and exact (at most 6 × 3 × 24 layouts).
//!
//! ```
//! use aevis_shared::layout::treemap::{Rect, treemap};
//! use aevis_shared::sets::SetRegions;
//! let r = SetRegions::new(&[0, 1, 2, 3], &[2, 3, 4], &[3, 5]);
//! let t = treemap(&r, Rect::new(0.0, 0.0, 60.0, 60.0), true);
//! assert_eq!(t.cells.len(), 6);
//! assert_eq!(t.cell_at(1.0, 1.0).map(|c| c.mask).is_some(), true);
//! ```

use serde::{Deserialize, Serialize};

use crate::sets::SetRegions;

/// An axis-aligned rectangle, `x`/`y` its top-left corner.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Rect {
    /// Left.
    pub x: f32,
    /// Top.
    pub y: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
}

impl Rect {
    /// A rectangle from its corner and size; negative or NaN sizes become 0.
    pub fn new(x: f32, y: f32, w: f32, h: f32) -> Self {
        let pos = |v: f32| if v.is_finite() && v > 0.0 { v } else { 0.0 };
        Self { x, y, w: pos(w), h: pos(h) }
    }

    /// Area.
    pub fn area(&self) -> f32 {
        self.w * self.h
    }

    /// Centre point.
    pub fn centre(&self) -> (f32, f32) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }

    /// The point lies inside (left and top edges included).
    pub fn contains(&self, x: f32, y: f32) -> bool {
        x >= self.x && x < self.x + self.w && y >= self.y && y < self.y + self.h
    }

    /// Longer side over shorter side (∞ for a degenerate rectangle).
    pub fn aspect(&self) -> f32 {
        let (a, b) = (self.w.max(self.h), self.w.min(self.h));
        if b > 0.0 { a / b } else { f32::INFINITY }
    }

    /// Area of the overlap with another rectangle.
    pub fn overlap(&self, o: &Rect) -> f32 {
        let w = (self.x + self.w).min(o.x + o.w) - self.x.max(o.x);
        let h = (self.y + self.h).min(o.y + o.h) - self.y.max(o.y);
        if w > 0.0 && h > 0.0 { w * h } else { 0.0 }
    }

    /// The rectangle shrunk by `by` on every side (never below zero size).
    pub fn inset(&self, by: f32) -> Rect {
        Rect::new(self.x + by, self.y + by, self.w - 2.0 * by, self.h - 2.0 * by)
    }
}

/// Squarified treemap (Bruls et al. 2000) of `weights`, visited in the given
/// order, filling `rect`. Zero and bad weights get empty rectangles.
pub fn squarify(weights: &[f32], rect: Rect) -> Vec<Rect> {
    let w: Vec<f64> = weights.iter().map(|&v| if v.is_finite() && v > 0.0 { f64::from(v) } else { 0.0 }).collect();
    let total: f64 = w.iter().sum();
    let mut out = vec![Rect::new(rect.x, rect.y, 0.0, 0.0); weights.len()];
    if total <= 0.0 || rect.area() <= 0.0 {
        return out;
    }
    let k = f64::from(rect.area()) / total;
    let items: Vec<(usize, f64)> = w.iter().enumerate().filter(|(_, v)| **v > 0.0).map(|(i, v)| (i, v * k)).collect();
    let (mut x, mut y, mut rw, mut rh) = (f64::from(rect.x), f64::from(rect.y), f64::from(rect.w), f64::from(rect.h));
    let worst = |row: &[(usize, f64)], side: f64| -> f64 {
        let s: f64 = row.iter().map(|r| r.1).sum();
        let (mx, mn) = row.iter().fold((0.0f64, f64::INFINITY), |(a, b), r| (a.max(r.1), b.min(r.1)));
        let s2 = s * s;
        let side2 = side * side;
        (side2 * mx / s2).max(s2 / (side2 * mn))
    };
    let mut i = 0;
    while i < items.len() {
        let side = rw.min(rh);
        let mut end = i + 1;
        while end < items.len() && worst(&items[i..=end], side) <= worst(&items[i..end], side) {
            end += 1;
        }
        let row = &items[i..end];
        let s: f64 = row.iter().map(|r| r.1).sum();
        let last_row = end == items.len();
        if rw >= rh {
            // Column at the left, as tall as the rectangle.
            let cw = if last_row { rw } else { s / rh };
            let mut cy = y;
            for (j, &(idx, a)) in row.iter().enumerate() {
                let ch = if j + 1 == row.len() { y + rh - cy } else { a / cw };
                out[idx] = Rect::new(x as f32, cy as f32, cw as f32, ch as f32);
                cy += ch;
            }
            x += cw;
            rw -= cw;
        } else {
            let chh = if last_row { rh } else { s / rw };
            let mut cx = x;
            for (j, &(idx, a)) in row.iter().enumerate() {
                let cw = if j + 1 == row.len() { x + rw - cx } else { a / chh };
                out[idx] = Rect::new(cx as f32, y as f32, cw as f32, chh as f32);
                cx += cw;
            }
            y += chh;
            rh -= chh;
        }
        i = end;
    }
    out
}

/// One feature map's cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Channel index in the layer.
    pub channel: usize,
    /// Region mask (bit 0 = A, 1 = B, 2 = C).
    pub mask: usize,
    /// Where it is drawn.
    pub rect: Rect,
}

/// One of the seven regions, placed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegionBox {
    /// Region mask.
    pub mask: usize,
    /// The set it is drawn under (0 = A, 1 = B, 2 = C).
    pub parent: usize,
    /// Number of feature maps.
    pub count: usize,
    /// Where it is drawn.
    pub rect: Rect,
}

/// The laid-out treemap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Treemap {
    /// The whole rectangle.
    pub bounds: Rect,
    /// Rectangle of each set's subtree (zero size when the set owns nothing).
    pub sets: [Rect; 3],
    /// Non-empty regions.
    pub regions: Vec<RegionBox>,
    /// One cell per feature map.
    pub cells: Vec<Cell>,
    /// Eq. 6 score of this placement.
    pub score: f32,
}

/// The set a region is drawn under: the largest set containing it (lowest index on ties).
pub fn parent_of(mask: usize, regions: &SetRegions) -> usize {
    (0..3)
        .filter(|i| mask & (1 << i) != 0)
        .max_by(|&a, &b| regions.set_size(a).cmp(&regions.set_size(b)).then(b.cmp(&a)))
        .unwrap_or(0)
}

fn bits(mask: usize) -> impl Iterator<Item = usize> {
    (0..3).filter(move |i| mask & (1 << i) != 0)
}

/// Eq. 6 for given set rectangles and region rectangles: Σ over shared
/// regions of `‖centre(region) − mean(centre(sets sharing it))‖²`.
pub fn eq6(sets: &[Rect; 3], regions: &[RegionBox]) -> f32 {
    regions.iter().filter(|r| r.mask.count_ones() >= 2 && r.count > 0).map(|r| region_term(sets, r.mask, &r.rect)).sum()
}

fn region_term(sets: &[Rect; 3], mask: usize, rect: &Rect) -> f32 {
    let n = mask.count_ones() as f32;
    let (mx, my) = bits(mask).fold((0.0, 0.0), |(x, y), i| {
        let c = sets[i].centre();
        (x + c.0 / n, y + c.1 / n)
    });
    let (cx, cy) = rect.centre();
    (cx - mx).powi(2) + (cy - my).powi(2)
}

fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first);
            out.push(p);
        }
    }
    out
}

fn sorted_by_size_desc(items: &mut [usize], size: impl Fn(usize) -> usize) {
    items.sort_by(|&a, &b| size(b).cmp(&size(a)).then(a.cmp(&b)));
}

/// Lays out the treemap of three critical sets in `bounds`.
///
/// With `optimise`, the set and region orders minimise Eq. 6; without, both
/// follow the classic squarified order (largest first), the baseline the
/// optimisation is measured against.
pub fn treemap(regions: &SetRegions, bounds: Rect, optimise: bool) -> Treemap {
    let count = |m: usize| regions.regions[m].len();
    let parent: Vec<usize> = (0..8).map(|m| parent_of(m, regions)).collect();
    let mut children: [Vec<usize>; 3] = Default::default();
    for m in 1..8 {
        if count(m) > 0 {
            children[parent[m]].push(m);
        }
    }
    let owned: Vec<usize> = (0..3).map(|s| children[s].iter().map(|&m| count(m)).sum()).collect();
    let mut present: Vec<usize> = (0..3).filter(|&s| owned[s] > 0).collect();
    sorted_by_size_desc(&mut present, |s| owned[s]);
    for c in &mut children {
        sorted_by_size_desc(c, count);
    }

    let place_sets = |order: &[usize]| -> [Rect; 3] {
        let weights: Vec<f32> = order.iter().map(|&s| owned[s] as f32).collect();
        let rects = squarify(&weights, bounds);
        let mut sets = [Rect::new(bounds.x, bounds.y, 0.0, 0.0); 3];
        for (&s, r) in order.iter().zip(rects) {
            sets[s] = r;
        }
        sets
    };
    let place_regions = |set: Rect, order: &[usize]| -> Vec<Rect> {
        squarify(&order.iter().map(|&m| count(m) as f32).collect::<Vec<_>>(), set)
    };

    let (sets, orders) = if optimise {
        let mut best: Option<(f32, [Rect; 3], [Vec<usize>; 3])> = None;
        for set_order in permutations(&present) {
            let sets = place_sets(&set_order);
            let mut total = 0.0;
            let mut orders: [Vec<usize>; 3] = Default::default();
            for s in 0..3 {
                let mut best_s: Option<(f32, Vec<usize>)> = None;
                for order in permutations(&children[s]) {
                    let rects = place_regions(sets[s], &order);
                    let score: f32 = order
                        .iter()
                        .zip(&rects)
                        .filter(|(m, _)| m.count_ones() >= 2)
                        .map(|(&m, r)| region_term(&sets, m, r))
                        .sum();
                    if best_s.as_ref().is_none_or(|(b, _)| score < *b - 1e-6) {
                        best_s = Some((score, order));
                    }
                }
                let (score, order) = best_s.unwrap_or_default();
                total += score;
                orders[s] = order;
            }
            if best.as_ref().is_none_or(|(b, _, _)| total < *b - 1e-6) {
                best = Some((total, sets, orders));
            }
        }
        match best {
            Some((_, sets, orders)) => (sets, orders),
            None => (place_sets(&present), children.clone()),
        }
    } else {
        (place_sets(&present), children.clone())
    };

    let mut boxes = Vec::new();
    let mut cells = Vec::new();
    for s in 0..3 {
        let rects = place_regions(sets[s], &orders[s]);
        for (&m, rect) in orders[s].iter().zip(rects) {
            boxes.push(RegionBox { mask: m, parent: s, count: count(m), rect });
            let cell_rects = squarify(&vec![1.0; count(m)], rect);
            for (&channel, rect) in regions.regions[m].iter().zip(cell_rects) {
                cells.push(Cell { channel, mask: m, rect });
            }
        }
    }
    boxes.sort_by_key(|b| b.mask);
    let score = eq6(&sets, &boxes);
    Treemap { bounds, sets, regions: boxes, cells, score }
}

impl Treemap {
    /// The cell under a point.
    pub fn cell_at(&self, x: f32, y: f32) -> Option<&Cell> {
        self.cells.iter().find(|c| c.rect.contains(x, y))
    }

    /// The cell of a channel.
    pub fn cell_of(&self, channel: usize) -> Option<&Cell> {
        self.cells.iter().find(|c| c.channel == channel)
    }
}

/// Short label of a region, e.g. `A`, `A∩B`, `A∩B∩C` with `sep = "∩"`, with the given set names.
pub fn region_label(mask: usize, names: [&str; 3], sep: &str) -> String {
    bits(mask).map(|i| names[i]).collect::<Vec<_>>().join(sep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiles(t: &Treemap) {
        let total: f32 = t.cells.iter().map(|c| c.rect.area()).sum();
        assert!((total - t.bounds.area()).abs() < 1e-2 * t.bounds.area(), "areas sum to the whole: {total}");
        for (i, a) in t.cells.iter().enumerate() {
            assert!(a.rect.x >= t.bounds.x - 1e-3 && a.rect.y >= t.bounds.y - 1e-3);
            assert!(a.rect.x + a.rect.w <= t.bounds.x + t.bounds.w + 1e-3);
            assert!(a.rect.y + a.rect.h <= t.bounds.y + t.bounds.h + 1e-3);
            for b in &t.cells[i + 1..] {
                assert!(a.rect.overlap(&b.rect) < 1e-4 * t.bounds.area(), "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn squarify_by_hand() {
        // Bruls et al.'s example: 6,6,4,3,2,2,1 in a 6×4 rectangle.
        let r = squarify(&[6.0, 6.0, 4.0, 3.0, 2.0, 2.0, 1.0], Rect::new(0.0, 0.0, 6.0, 4.0));
        assert_eq!(r[0], Rect::new(0.0, 0.0, 3.0, 2.0));
        assert_eq!(r[1], Rect::new(0.0, 2.0, 3.0, 2.0));
        // The rest is 3 wide and 4 tall: 4 and 3 go in a row on top, 7/3 high.
        assert!((r[2].h - 7.0 / 3.0).abs() < 1e-5 && (r[2].w - 12.0 / 7.0).abs() < 1e-5);
        assert!((r[3].x - (3.0 + 12.0 / 7.0)).abs() < 1e-5 && r[3].y == 0.0);
        let area: f32 = r.iter().map(Rect::area).sum();
        assert!((area - 24.0).abs() < 1e-4);
        for (rect, w) in r.iter().zip([6.0, 6.0, 4.0, 3.0, 2.0, 2.0, 1.0]) {
            assert!((rect.area() - w).abs() < 1e-4);
        }
        assert!(squarify(&[0.0, f32::NAN], Rect::new(0.0, 0.0, 1.0, 1.0)).iter().all(|r| r.area() == 0.0));
    }

    #[test]
    fn hierarchy_puts_shared_under_largest() {
        let r = SetRegions::new(&[0, 1, 2, 3], &[2, 3, 4], &[3, 5]);
        assert_eq!(parent_of(0b011, &r), 0);
        assert_eq!(parent_of(0b111, &r), 0);
        assert_eq!(parent_of(0b110, &r), 1);
        assert_eq!(parent_of(0b100, &r), 2);
        assert_eq!(region_label(0b101, ["S", "A", "T"], "∩"), "S∩T");
    }

    #[test]
    fn cells_tile_with_equal_areas() {
        let a: Vec<usize> = (0..20).collect();
        let b: Vec<usize> = (10..26).collect();
        let c: Vec<usize> = (5..8).chain(15..18).chain(22..24).chain(30..40).collect();
        let r = SetRegions::new(&a, &b, &c);
        let bounds = Rect::new(10.0, 20.0, 400.0, 300.0);
        for optimise in [false, true] {
            let t = treemap(&r, bounds, optimise);
            let n = (1..8).map(|m| r.regions[m].len()).sum::<usize>();
            assert_eq!(t.cells.len(), n);
            tiles(&t);
            let each = bounds.area() / n as f32;
            for c in &t.cells {
                assert!((c.rect.area() - each).abs() < 1e-2 * each);
                assert!(c.rect.aspect() < 4.0, "cell aspect {}", c.rect.aspect());
            }
            // Region and set areas are proportional to their sizes.
            for b in &t.regions {
                assert!((b.rect.area() - each * b.count as f32).abs() < 1e-2 * bounds.area());
            }
            let owned_a: usize = t.regions.iter().filter(|b| b.parent == 0).map(|b| b.count).sum();
            assert_eq!(owned_a, 20, "A owns itself and every shared part");
            assert!((t.sets[0].area() - each * 20.0).abs() < 1e-2 * bounds.area());
            assert_eq!(t.regions.len(), 7);
            let hit = t.cell_at(t.cells[3].rect.centre().0, t.cells[3].rect.centre().1).map(|c| c.channel);
            assert_eq!(hit, Some(t.cells[3].channel));
            assert_eq!(t.cell_of(39).map(|c| c.mask), Some(0b100));
            assert!(t.cell_at(0.0, 0.0).is_none());
        }
    }

    #[test]
    fn eq6_placement_beats_plain_order() {
        // A large, B and C small; A∩B and A∩C live under A. The plain order puts
        // them wherever squarify's size order does; the optimised one pulls each
        // towards the set it shares with.
        let a: Vec<usize> = (0..40).collect();
        let b: Vec<usize> = (30..35).chain(50..60).collect();
        let c: Vec<usize> = (0..5).chain(60..72).collect();
        let r = SetRegions::new(&a, &b, &c);
        let bounds = Rect::new(0.0, 0.0, 300.0, 200.0);
        let plain = treemap(&r, bounds, false);
        let best = treemap(&r, bounds, true);
        assert!(best.score < plain.score * 0.9, "optimised {} vs plain {}", best.score, plain.score);
        tiles(&best);
        // The score is exactly Eq. 6 of the boxes.
        assert!((eq6(&best.sets, &best.regions) - best.score).abs() < 1e-3);
        // By hand for a single shared region: centre (5,5), set centres (0,0), (10,10), (10,0).
        let sets = [Rect::new(-1.0, -1.0, 2.0, 2.0), Rect::new(9.0, 9.0, 2.0, 2.0), Rect::new(9.0, -1.0, 2.0, 2.0)];
        let boxed = |mask| RegionBox { mask, parent: 0, count: 1, rect: Rect::new(4.0, 4.0, 2.0, 2.0) };
        assert_eq!(eq6(&sets, &[boxed(0b011)]), 0.0);
        // A∩C: mean centre (5,0), distance² 25; a unique region counts nothing.
        assert_eq!(eq6(&sets, &[boxed(0b101), boxed(0b001)]), 25.0);
    }

    #[test]
    fn empty_and_degenerate() {
        let r = SetRegions::new(&[], &[], &[]);
        let t = treemap(&r, Rect::new(0.0, 0.0, 100.0, 100.0), true);
        assert!(t.cells.is_empty() && t.regions.is_empty() && t.score == 0.0);
        let r = SetRegions::new(&[1], &[1], &[1]);
        let t = treemap(&r, Rect::new(0.0, 0.0, 0.0, f32::NAN), true);
        assert_eq!(t.cells.len(), 1);
        assert_eq!(t.cells[0].rect.area(), 0.0);
        let t = treemap(&r, Rect::new(0.0, 0.0, 10.0, 10.0), true);
        assert_eq!(t.cells[0].rect, Rect::new(0.0, 0.0, 10.0, 10.0));
        assert_eq!(t.cells[0].mask, 0b111);
    }
}
