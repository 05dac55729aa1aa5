//! The seven disjoint regions of three critical sets (paper §5.3, Fig. 7b).

use serde::{Deserialize, Serialize};

/// Members of each region, indexed by a 3-bit mask: bit 0 = set A, bit 1 = B,
/// bit 2 = C. `regions[0b001]` is "only A", `regions[0b111]` "all three";
/// `regions[0]` is always empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRegions {
    /// Sorted channel indices per mask.
    pub regions: [Vec<usize>; 8],
}

impl SetRegions {
    /// Splits three sets of channel indices into the seven regions.
    pub fn new(a: &[usize], b: &[usize], c: &[usize]) -> Self {
        let mut all: Vec<usize> = a.iter().chain(b).chain(c).copied().collect();
        all.sort_unstable();
        all.dedup();
        let mut regions: [Vec<usize>; 8] = Default::default();
        for ch in all {
            let mask = usize::from(a.contains(&ch)) | usize::from(b.contains(&ch)) << 1 | usize::from(c.contains(&ch)) << 2;
            regions[mask].push(ch);
        }
        Self { regions }
    }

    /// Size of the whole set `i` (0 = A, 1 = B, 2 = C).
    pub fn set_size(&self, i: usize) -> usize {
        (1..8).filter(|m| m & (1 << i) != 0).map(|m| self.regions[m].len()).sum()
    }

    /// The region mask a channel falls in (0 when in no set).
    pub fn mask_of(&self, ch: usize) -> usize {
        (1..8).find(|&m| self.regions[m].binary_search(&ch).is_ok()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_regions_by_hand() {
        let r = SetRegions::new(&[0, 1, 2, 3], &[2, 3, 4], &[3, 5]);
        assert_eq!(r.regions[0b001], vec![0, 1]);
        assert_eq!(r.regions[0b010], vec![4]);
        assert_eq!(r.regions[0b100], vec![5]);
        assert_eq!(r.regions[0b011], vec![2]);
        assert_eq!(r.regions[0b111], vec![3]);
        assert!(r.regions[0b101].is_empty() && r.regions[0b110].is_empty());
        assert_eq!((r.set_size(0), r.set_size(1), r.set_size(2)), (4, 3, 2));
        assert_eq!(r.mask_of(3), 7);
        assert_eq!(r.mask_of(9), 0);
    }
}
