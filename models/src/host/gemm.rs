//! The workspace's one `unsafe` call: gemm's raw-pointer matrix product,
//! behind views whose every reachable index is checked against its slice.

/// A read-only strided matrix view: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    fn fits(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`), `dst` row-major
/// `a.rows × b.cols`. Panics on mismatched shapes: callers pass shapes
/// derived from the network, so a mismatch is a bug, not bad input.
pub(crate) fn matmul(dst: &mut [f32], accumulate: bool, a: View<'_>, b: View<'_>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions differ");
    assert!(dst.len() >= m * n, "matmul: destination too small");
    assert!(a.fits() && b.fits(), "matmul: a view reaches past its slice");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: every index gemm reads, `i·rs + j·cs` for i < rows and j < cols,
    // lies inside `a.data` and `b.data` (checked by `fits`); every index it
    // writes, `i·n + j` for i < m and j < n, lies inside `dst` (checked above);
    // `dst` is borrowed mutably, so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            // One thread: waking a second costs more than it saves here
            // (measured: a ResNet-56 gate step at batch 1 took 13.4 ms on one
            // thread against 18.3 ms on two; an EfficientNet-Lite0 step, whose
            // pointwise products reach 10⁷–10⁸ multiply-adds, 101 ms against
            // 144 ms with the products of ≥ 2²⁴ on both cores).
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_the_definition_plain_transposed_and_accumulated() {
        // a = [[1, 2, 3], [4, 5, 6]], b = [[1, 0], [0, 1], [2, -1]]
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0, 2.0, -1.0];
        let mut c = [9.0; 4];
        matmul(&mut c, false, View::rows(&a, 2, 3), View::rows(&b, 3, 2));
        assert_eq!(c, [7.0, -1.0, 16.0, -1.0]);
        // aᵀ·a through the transposed view: [[17, 22, 27], [22, 29, 36], [27, 36, 45]].
        let mut d = [0.0; 9];
        matmul(&mut d, false, View::rows(&a, 2, 3).t(), View::rows(&a, 2, 3));
        assert_eq!(d, [17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0]);
        matmul(&mut c, true, View::rows(&a, 2, 3), View::rows(&b, 3, 2));
        assert_eq!(c, [14.0, -2.0, 32.0, -2.0]);
    }

    #[test]
    #[should_panic(expected = "reaches past")]
    fn a_view_past_its_slice_is_refused() {
        let a = [1.0; 5];
        let mut c = [0.0; 4];
        matmul(&mut c, false, View::rows(&a, 2, 3), View::rows(&a, 3, 2));
    }
}
