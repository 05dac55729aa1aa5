//! Colour scales as plain functions: a diverging scale for activation
//! differences and a sequential one (light to dark green, as in the paper's
//! neuron view) for activation maps.
//!
//! ```
//! use aevis_shared::layout::colour::{Rgb, diverging, sequential};
//! assert_eq!(diverging(0.0), Rgb::new(0.969, 0.969, 0.969));
//! assert_eq!(sequential(1.0).to_hex(), "#00441b");
//! ```

use serde::{Deserialize, Serialize};

/// A colour with components in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rgb {
    /// Red.
    pub r: f32,
    /// Green.
    pub g: f32,
    /// Blue.
    pub b: f32,
}

impl Rgb {
    /// A colour from components in `[0, 1]`.
    pub const fn new(r: f32, g: f32, b: f32) -> Self {
        Self { r, g, b }
    }

    /// A colour from 8-bit components.
    pub const fn from_u8(r: u8, g: u8, b: u8) -> Self {
        Self { r: r as f32 / 255.0, g: g as f32 / 255.0, b: b as f32 / 255.0 }
    }

    /// 8-bit components, rounded and clamped.
    pub fn to_u8(self) -> [u8; 3] {
        [self.r, self.g, self.b].map(|c| (c.clamp(0.0, 1.0) * 255.0).round() as u8)
    }

    /// `#rrggbb`.
    pub fn to_hex(self) -> String {
        let [r, g, b] = self.to_u8();
        format!("#{r:02x}{g:02x}{b:02x}")
    }

    /// Linear mix: `t = 0` gives `self`, `t = 1` gives `other`.
    pub fn mix(self, other: Rgb, t: f32) -> Rgb {
        let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
        Rgb::new(self.r + (other.r - self.r) * t, self.g + (other.g - self.g) * t, self.b + (other.b - self.b) * t)
    }
}

/// Piecewise-linear interpolation through evenly spaced stops, `t` in `[0, 1]`
/// (clamped; NaN gives the first stop).
pub fn interpolate(stops: &[Rgb], t: f32) -> Rgb {
    match stops {
        [] => Rgb::new(0.5, 0.5, 0.5),
        [only] => *only,
        _ => {
            let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
            let pos = t * (stops.len() - 1) as f32;
            let i = (pos.floor() as usize).min(stops.len() - 2);
            stops[i].mix(stops[i + 1], pos - i as f32)
        }
    }
}

/// ColorBrewer RdBu, blue (negative) to red (positive).
const DIVERGING: [Rgb; 7] = [
    Rgb::from_u8(33, 102, 172),
    Rgb::from_u8(103, 169, 207),
    Rgb::from_u8(209, 229, 240),
    Rgb::from_u8(247, 247, 247),
    Rgb::from_u8(253, 219, 199),
    Rgb::from_u8(239, 138, 98),
    Rgb::from_u8(178, 24, 43),
];

/// ColorBrewer Greens, light to dark.
const SEQUENTIAL: [Rgb; 6] = [
    Rgb::from_u8(247, 252, 245),
    Rgb::from_u8(199, 233, 192),
    Rgb::from_u8(116, 196, 118),
    Rgb::from_u8(35, 139, 69),
    Rgb::from_u8(0, 109, 44),
    Rgb::from_u8(0, 68, 27),
];

/// Diverging scale for `t` in `[-1, 1]`: blue below 0, near-white at 0, red above.
pub fn diverging(t: f32) -> Rgb {
    let t = if t.is_finite() { t } else { 0.0 };
    let c = interpolate(&DIVERGING, (t.clamp(-1.0, 1.0) + 1.0) / 2.0);
    // Round to 3 decimals so the centre is exactly the middle stop.
    Rgb::new((c.r * 1000.0).round() / 1000.0, (c.g * 1000.0).round() / 1000.0, (c.b * 1000.0).round() / 1000.0)
}

/// Sequential scale for `t` in `[0, 1]`: light to dark green.
pub fn sequential(t: f32) -> Rgb {
    interpolate(&SEQUENTIAL, t)
}

/// `v` mapped from `[min, max]` to `[0, 1]` (clamped); 0 when the range is
/// empty or a value is not finite.
pub fn normalise(v: f32, min: f32, max: f32) -> f32 {
    if !(v.is_finite() && min.is_finite() && max.is_finite()) || max <= min {
        return 0.0;
    }
    ((v - min) / (max - min)).clamp(0.0, 1.0)
}

/// `v / max|v|` over a set of values, in `[-1, 1]`; 0 when all are 0 or bad.
pub fn symmetric(v: f32, max_abs: f32) -> f32 {
    if !(v.is_finite() && max_abs.is_finite()) || max_abs <= 0.0 {
        return 0.0;
    }
    (v / max_abs).clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_by_hand() {
        assert_eq!(diverging(-1.0).to_u8(), [33, 102, 172]);
        assert_eq!(diverging(1.0).to_u8(), [178, 24, 43]);
        assert_eq!(diverging(5.0), diverging(1.0));
        assert_eq!(diverging(f32::NAN), diverging(0.0));
        assert_eq!(sequential(0.0).to_u8(), [247, 252, 245]);
        // Half way between stops 2 (116,196,118) and 3 (35,139,69) at t = 0.5.
        assert_eq!(sequential(0.5).to_u8(), [76, 168, 94]);
        assert_eq!(sequential(f32::NAN), sequential(0.0));
        assert_eq!(normalise(5.0, 0.0, 10.0), 0.5);
        assert_eq!(normalise(5.0, 1.0, 1.0), 0.0);
        assert_eq!(normalise(-3.0, 0.0, 10.0), 0.0);
        assert_eq!(symmetric(-2.0, 4.0), -0.5);
        assert_eq!(symmetric(1.0, 0.0), 0.0);
        assert_eq!(Rgb::from_u8(255, 0, 16).to_hex(), "#ff0010");
        assert_eq!(interpolate(&[], 0.3), Rgb::new(0.5, 0.5, 0.5));
    }
}
