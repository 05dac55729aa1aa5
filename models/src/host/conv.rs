//! A 2-D convolution of one image (`[c, h, w]`, row-major) and its gradient
//! with respect to the input: im2col + gemm forward, gemm with the transposed
//! weights + col2im backward. Burn-flex runs the same maths, but at batch 1
//! on CIFAR shapes its per-call layout work (NHWC copies, a transposed weight
//! copy, scalar im2col, scattered writes) costs several times the product
//! itself; here the weights are already in gemm's layout, im2col copies whole
//! rows and the output lands in place.

use super::gemm::{View, matmul};

/// A convolution with its fixed geometry: groups = 1, or depthwise
/// (groups = channels, one `k×k` filter per channel).
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    /// Weights `[cout, cin·k·k]` (the PyTorch layout, flattened; `[c, k·k]` when depthwise).
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    /// `[top, left, bottom, right]`.
    pub pad: [usize; 4],
    pub h: usize,
    pub w_in: usize,
    pub oh: usize,
    pub ow: usize,
    /// One filter per channel (`cin == cout`): a direct loop, no gemm.
    pub depthwise: bool,
}

/// Output size of a convolution along one axis (`None` when the kernel does not fit).
pub(crate) fn out_size(len: usize, k: usize, stride: usize, pad_lo: usize, pad_hi: usize) -> Option<usize> {
    (len + pad_lo + pad_hi).checked_sub(k).map(|d| d / stride + 1)
}

impl Conv {
    fn rows(&self) -> usize {
        self.cin * self.k * self.k
    }

    fn spatial(&self) -> usize {
        self.oh * self.ow
    }

    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == [0; 4]
    }

    /// The output columns `[ox_lo, ox_hi)` whose input column `ox·s + kw − pl` lies inside the image.
    fn valid_cols(&self, kw: usize) -> (usize, usize) {
        let (s, pl, w) = (self.stride as isize, self.pad[1] as isize, self.w_in as isize);
        let kw = kw as isize;
        // ox·s + kw − pl ≥ 0  and  ox·s + kw − pl < w
        let lo = (pl - kw).max(0);
        let lo = (lo + s - 1) / s;
        let hi = if w + pl - kw <= 0 { 0 } else { (w + pl - kw + s - 1) / s };
        let hi = hi.min(self.ow as isize).max(lo);
        (lo as usize, hi as usize)
    }

    fn input_row(&self, oy: usize, kh: usize) -> Option<usize> {
        let iy = (oy * self.stride + kh) as isize - self.pad[0] as isize;
        (iy >= 0 && (iy as usize) < self.h).then_some(iy as usize)
    }

    /// Stride 1 with "same" padding: row `(ci, kh, kw)` of im2col is the
    /// plane shifted by `(kh − pt)·w + kw − pl`, so it is one copy (or one
    /// add, backward) over the valid output rows, with the few entries that
    /// wrapped across a row edge fixed up — instead of a short copy per row.
    fn same_shape(&self) -> bool {
        self.stride == 1 && self.oh == self.h && self.ow == self.w_in
    }

    /// For [`Conv::same_shape`] convolutions: the valid output rows
    /// `[oy_lo, oy_hi)` of kernel row `kh` and the plane offset of `(kh, kw)`.
    fn shift(&self, kh: usize, kw: usize) -> (usize, usize, isize) {
        let (pt, w) = (self.pad[0] as isize, self.w_in as isize);
        let dy = kh as isize - pt;
        let oy_lo = (-dy).max(0) as usize;
        let oy_hi = ((self.h as isize - dy).min(self.h as isize)).max(oy_lo as isize) as usize;
        (oy_lo, oy_hi, dy * w + kw as isize - self.pad[1] as isize)
    }

    /// `col[(ci·k + kh)·k + kw][oy·ow + ox] = x[ci][oy·s + kh − pt][ox·s + kw − pl]`
    /// (0 outside); every entry of `col` is written.
    fn im2col(&self, x: &[f32], col: &mut [f32]) {
        let (k, n, hw, s, pl) = (self.k, self.spatial(), self.h * self.w_in, self.stride, self.pad[1]);
        col.chunks_mut(n).enumerate().for_each(|(r, row)| {
            let (ci, kh, kw) = (r / (k * k), (r / k) % k, r % k);
            let plane = &x[ci * hw..(ci + 1) * hw];
            let (lo, hi) = self.valid_cols(kw);
            if self.same_shape() {
                let (oy_lo, oy_hi, off) = self.shift(kh, kw);
                let (a, b) = (oy_lo * self.ow, oy_hi * self.ow);
                row[..a].fill(0.0);
                row[b..].fill(0.0);
                // Entries clipped here wrapped across an edge: zeroed just below.
                if let Some((ca, cb)) = clip(a, b, off, hw) {
                    let src = (ca as isize + off) as usize;
                    row[ca..cb].copy_from_slice(&plane[src..src + (cb - ca)]);
                }
                for oy in oy_lo..oy_hi {
                    row[oy * self.ow..oy * self.ow + lo].fill(0.0);
                    row[oy * self.ow + hi..(oy + 1) * self.ow].fill(0.0);
                }
                return;
            }
            for oy in 0..self.oh {
                let dst = &mut row[oy * self.ow..(oy + 1) * self.ow];
                let Some(iy) = self.input_row(oy, kh) else {
                    dst.fill(0.0);
                    continue;
                };
                let src = &plane[iy * self.w_in..(iy + 1) * self.w_in];
                dst[..lo].fill(0.0);
                dst[hi..].fill(0.0);
                if s == 1 {
                    dst[lo..hi].copy_from_slice(&src[lo + kw - pl..hi + kw - pl]);
                } else {
                    for (ox, d) in (lo..hi).zip(&mut dst[lo..hi]) {
                        *d = src[ox * s + kw - pl];
                    }
                }
            }
        });
    }

    /// The adjoint of [`Conv::im2col`]: `xg[ci][iy][ix] += col[…]` over every
    /// output position that read `(iy, ix)`.
    /// `col` is scratch: its entries that fall outside the image are zeroed.
    fn col2im_add(&self, col: &mut [f32], xg: &mut [f32]) {
        let (k, n, hw, s, pl) = (self.k, self.spatial(), self.h * self.w_in, self.stride, self.pad[1]);
        xg.chunks_mut(hw).enumerate().for_each(|(ci, plane)| {
            for kh in 0..k {
                for kw in 0..k {
                    let r = (ci * k + kh) * k + kw;
                    let row = &mut col[r * n..(r + 1) * n];
                    let (lo, hi) = self.valid_cols(kw);
                    if self.same_shape() {
                        let (oy_lo, oy_hi, off) = self.shift(kh, kw);
                        for oy in oy_lo..oy_hi {
                            row[oy * self.ow..oy * self.ow + lo].fill(0.0);
                            row[oy * self.ow + hi..(oy + 1) * self.ow].fill(0.0);
                        }
                        // The clipped entries are wrapped ones, zeroed above.
                        if let Some((a, b)) = clip(oy_lo * self.ow, oy_hi * self.ow, off, hw) {
                            let dst = (a as isize + off) as usize;
                            plane[dst..dst + (b - a)].iter_mut().zip(&row[a..b]).for_each(|(d, v)| *d += v);
                        }
                        continue;
                    }
                    for oy in 0..self.oh {
                        let Some(iy) = self.input_row(oy, kh) else { continue };
                        let dst = &mut plane[iy * self.w_in..(iy + 1) * self.w_in];
                        let src = &row[oy * self.ow..(oy + 1) * self.ow];
                        if s == 1 {
                            for (d, v) in dst[lo + kw - pl..hi + kw - pl].iter_mut().zip(&src[lo..hi]) {
                                *d += v;
                            }
                        } else {
                            for ox in lo..hi {
                                dst[ox * s + kw - pl] += src[ox];
                            }
                        }
                    }
                }
            }
        });
    }

    /// Every row segment a depthwise convolution multiplies: calls
    /// `f(c, w, iy, oy, kw, lo, hi)` for output row `oy` of channel `c`, columns
    /// `[lo, hi)`, which read input row `iy` at columns `ox·s + kw − pl`.
    fn depthwise_segments(&self, mut f: impl FnMut(usize, f32, usize, usize, usize, usize, usize)) {
        let k = self.k;
        for c in 0..self.cout {
            for kh in 0..k {
                for kw in 0..k {
                    let wv = self.w[(c * k + kh) * k + kw];
                    let (lo, hi) = self.valid_cols(kw);
                    for oy in 0..self.oh {
                        if let Some(iy) = self.input_row(oy, kh) {
                            f(c, wv, iy, oy, kw, lo, hi);
                        }
                    }
                }
            }
        }
    }

    /// `out = conv(x) + b`, `out` is `[cout, oh, ow]`; `scratch` is reused between calls.
    pub fn forward(&self, x: &[f32], out: &mut [f32], scratch: &mut Vec<f32>) {
        let n = self.spatial();
        if self.depthwise {
            for (plane, &b) in out.chunks_mut(n).zip(&self.b) {
                plane.fill(b);
            }
            let (hw, s, pl) = (self.h * self.w_in, self.stride, self.pad[1]);
            self.depthwise_segments(|c, wv, iy, oy, kw, lo, hi| {
                let xr = &x[c * hw + iy * self.w_in..][..self.w_in];
                let yr = &mut out[c * n + oy * self.ow..][..self.ow];
                if s == 1 {
                    yr[lo..hi].iter_mut().zip(&xr[lo + kw - pl..hi + kw - pl]).for_each(|(o, v)| *o += wv * v);
                } else {
                    (lo..hi).for_each(|ox| yr[ox] += wv * xr[ox * s + kw - pl]);
                }
            });
            return;
        }
        let w = View::rows(&self.w, self.cout, self.rows());
        if self.pointwise() {
            matmul(out, false, w, View::rows(x, self.cin, n));
        } else {
            let col = grow(scratch, self.rows() * n);
            self.im2col(x, col);
            matmul(out, false, w, View::rows(col, self.rows(), n));
        }
        for (plane, &b) in out.chunks_mut(n).zip(&self.b) {
            plane.iter_mut().for_each(|v| *v += b);
        }
    }

    /// `xg += ∂⟨g, conv(x)⟩/∂x` for the output gradient `g` (`[cout, oh, ow]`).
    pub fn backward_input(&self, g: &[f32], xg: &mut [f32], scratch: &mut Vec<f32>) {
        let n = self.spatial();
        if self.depthwise {
            let (hw, s, pl) = (self.h * self.w_in, self.stride, self.pad[1]);
            self.depthwise_segments(|c, wv, iy, oy, kw, lo, hi| {
                let gr = &g[c * n + oy * self.ow..][..self.ow];
                let xr = &mut xg[c * hw + iy * self.w_in..][..self.w_in];
                if s == 1 {
                    xr[lo + kw - pl..hi + kw - pl].iter_mut().zip(&gr[lo..hi]).for_each(|(o, v)| *o += wv * v);
                } else {
                    (lo..hi).for_each(|ox| xr[ox * s + kw - pl] += wv * gr[ox]);
                }
            });
            return;
        }
        let wt = View::rows(&self.w, self.cout, self.rows()).t();
        if self.pointwise() {
            matmul(xg, true, wt, View::rows(g, self.cout, n));
        } else {
            let col = grow(scratch, self.rows() * n);
            matmul(col, false, wt, View::rows(g, self.cout, n));
            self.col2im_add(col, xg);
        }
    }
}

/// `[a, b)` narrowed so that `j + off` stays inside `[0, len)` (`None` when nothing is left).
fn clip(a: usize, b: usize, off: isize, len: usize) -> Option<(usize, usize)> {
    let lo = (a as isize).max(-off);
    let hi = (b as isize).min(len as isize - off);
    (lo < hi).then_some((lo as usize, hi as usize))
}

/// The first `len` entries of `scratch`, grown (zero-filled) when shorter;
/// callers overwrite every entry they use.
fn grow(scratch: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    &mut scratch[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one output at a time.
    fn naive(c: &Conv, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; c.cout * c.oh * c.ow];
        for co in 0..c.cout {
            for oy in 0..c.oh {
                for ox in 0..c.ow {
                    let mut acc = c.b[co];
                    let (ci0, ci1, wcin) = if c.depthwise { (co, co + 1, 1) } else { (0, c.cin, c.cin) };
                    for ci in ci0..ci1 {
                        for kh in 0..c.k {
                            for kw in 0..c.k {
                                let iy = (oy * c.stride + kh) as isize - c.pad[0] as isize;
                                let ix = (ox * c.stride + kw) as isize - c.pad[1] as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < c.h && (ix as usize) < c.w_in {
                                    let xv = x[(ci * c.h + iy as usize) * c.w_in + ix as usize];
                                    acc += c.w[((co * wcin + ci - ci0) * c.k + kh) * c.k + kw] * xv;
                                }
                            }
                        }
                    }
                    out[(co * c.oh + oy) * c.ow + ox] = acc;
                }
            }
        }
        out
    }

    /// `cout == 0` asks for a depthwise convolution of `cin` channels.
    fn conv(cin: usize, cout: usize, k: usize, stride: usize, pad: [usize; 4], h: usize, w: usize) -> Conv {
        let depthwise = cout == 0;
        let cout = if depthwise { cin } else { cout };
        let oh = out_size(h, k, stride, pad[0], pad[2]).unwrap();
        let ow = out_size(w, k, stride, pad[1], pad[3]).unwrap();
        // Small integers keep every sum exact in f32, so the comparisons are equalities.
        let filters = if depthwise { 1 } else { cin };
        let wv = (0..cout * filters * k * k).map(|i| ((i * 7 % 5) as f32) - 2.0).collect();
        let b = (0..cout).map(|i| i as f32).collect();
        Conv { w: wv, b, cin, cout, k, stride, pad, h, w_in: w, oh, ow, depthwise }
    }

    fn image(len: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 3 % 7) as f32) - 3.0).collect()
    }

    /// `(cin, cout, k, stride, pad, h, w)`.
    type Case = (usize, usize, usize, usize, [usize; 4], usize, usize);

    const CASES: [Case; 13] = [
        (3, 0, 3, 1, [1, 1, 1, 1], 5, 6),
        (2, 0, 3, 2, [0, 0, 1, 1], 7, 6),
        (2, 0, 5, 2, [1, 1, 2, 2], 9, 8),
        (3, 0, 5, 1, [2, 2, 2, 2], 4, 5),
        (2, 3, 5, 1, [1, 2, 3, 2], 6, 7),
        (3, 2, 3, 1, [2, 0, 0, 2], 4, 4),
        (2, 2, 3, 1, [1, 1, 1, 1], 1, 2),
        (3, 4, 3, 1, [1, 1, 1, 1], 5, 6),
        (2, 3, 3, 2, [1, 1, 1, 1], 7, 6),
        (4, 2, 1, 1, [0, 0, 0, 0], 3, 3),
        (2, 2, 1, 2, [0, 0, 0, 0], 5, 5),
        (1, 2, 5, 2, [1, 2, 2, 1], 8, 7),
        (2, 2, 3, 1, [0, 0, 0, 0], 4, 5),
    ];

    #[test]
    fn forward_equals_the_definition_for_strides_pads_and_pointwise() {
        for (cin, cout, k, s, pad, h, w) in CASES {
            let c = conv(cin, cout, k, s, pad, h, w);
            let x = image(cin * h * w);
            let mut out = vec![f32::NAN; c.cout * c.oh * c.ow];
            // Stale scratch must not leak into the result.
            let mut scratch = vec![f32::NAN; 7];
            c.forward(&x, &mut out, &mut scratch);
            c.forward(&x, &mut out, &mut scratch);
            assert_eq!(out, naive(&c, &x), "case {:?}", (cin, cout, k, s, pad, h, w));
        }
    }

    #[test]
    fn backward_is_the_adjoint_of_forward() {
        // ⟨g, conv(e_i) − b⟩ is the i-th input gradient: check every coordinate.
        for (cin, cout, k, s, pad, h, w) in CASES {
            let mut c = conv(cin, cout, k, s, pad, h, w);
            c.b.iter_mut().for_each(|b| *b = 0.0);
            let g = image(c.cout * c.oh * c.ow);
            let mut xg = vec![1.0; cin * h * w];
            let mut scratch = vec![f32::NAN; 1000];
            c.backward_input(&g, &mut xg, &mut scratch);
            for i in 0..cin * h * w {
                let mut e = vec![0.0; cin * h * w];
                e[i] = 1.0;
                let y = naive(&c, &e);
                let want: f32 = y.iter().zip(&g).map(|(a, b)| a * b).sum();
                assert_eq!(xg[i], 1.0 + want, "case {:?}, input {i}", (cin, cout, k, s, pad, h, w));
            }
        }
    }
}
