//! Small tensor helpers shared by the analyses.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, activation};

use crate::data::Image;
use crate::error::{Error, Result};

/// Stacks images into a batch `[n, 3, h, w]`.
pub fn batch<B: Backend>(images: &[&Image], device: &B::Device) -> Result<Tensor<B, 4>> {
    let first = images.first().ok_or_else(|| Error::BadInput("no images".into()))?;
    let (h, w) = (first.height, first.width);
    let mut values = Vec::with_capacity(images.len() * 3 * h * w);
    for img in images {
        img.expect_size(h, w)?;
        values.extend_from_slice(&img.pixels);
    }
    Ok(Tensor::from_data(TensorData::new(values, [images.len(), 3, h, w]), device))
}

/// Host copy of a tensor's values (row-major).
pub fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().expect("float tensor converts to f32")
}

/// A `[rows, cols]` host matrix as rows.
pub fn rows<B: Backend>(t: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [_, cols] = t.dims();
    host(t).chunks(cols.max(1)).map(<[f32]>::to_vec).collect()
}

/// Softmax probabilities `[n, k]` as rows.
pub fn probabilities<B: Backend>(logits: Tensor<B, 2>) -> Vec<Vec<f32>> {
    rows(activation::softmax(logits, 1))
}

/// Index of the largest value (first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// A `[n, c]` tensor from host rows.
pub fn from_rows<B: Backend>(rows: &[Vec<f32>], device: &B::Device) -> Tensor<B, 2> {
    let cols = rows.first().map_or(0, Vec::len);
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), cols]), device)
}
