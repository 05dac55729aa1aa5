//! Real inputs: the CIFAR-10 binary format, image folders with a
//! `labels.csv` (the NIPS 2017 DEV set's layout), PNG/JPEG decoding with
//! resize and centre crop, and PNG encoding of `[0, 1]` images.

use std::path::{Path, PathBuf};

use image::{RgbImage, imageops::FilterType};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Bytes of one CIFAR-10 record: a label and 3×32×32 planar RGB.
pub const CIFAR_RECORD: usize = 3073;

/// An image in pixel space: `[3, h, w]` planar RGB in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// Planar RGB values in `[0, 1]`, length `3·h·w`.
    pub pixels: Vec<f32>,
}

impl Image {
    /// Checks that the image has the model's input size.
    pub fn expect_size(&self, height: usize, width: usize) -> Result<()> {
        if (self.height, self.width) != (height, width) {
            return Err(Error::BadInput(format!(
                "image is {}×{}, the model expects {height}×{width}",
                self.height, self.width
            )));
        }
        Ok(())
    }

    /// The image quantised to 8 bits and back (what saving as PNG does).
    pub fn quantised(&self) -> Image {
        Image {
            height: self.height,
            width: self.width,
            pixels: self.pixels.iter().map(|&p| (p.clamp(0.0, 1.0) * 255.0).round() / 255.0).collect(),
        }
    }

    /// Encodes the image as an 8-bit PNG.
    pub fn to_png(&self) -> Vec<u8> {
        let (h, w) = (self.height, self.width);
        let mut img = RgbImage::new(w as u32, h as u32);
        for y in 0..h {
            for x in 0..w {
                let px = |c: usize| (self.pixels[c * h * w + y * w + x].clamp(0.0, 1.0) * 255.0).round() as u8;
                img.put_pixel(x as u32, y as u32, image::Rgb([px(0), px(1), px(2)]));
            }
        }
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("encoding an RGB image into memory cannot fail");
        out
    }

    fn from_rgb(img: &RgbImage) -> Image {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut pixels = vec![0.0; 3 * h * w];
        for (x, y, p) in img.enumerate_pixels() {
            for c in 0..3 {
                pixels[c * h * w + y as usize * w + x as usize] = f32::from(p[c]) / 255.0;
            }
        }
        Image { height: h, width: w, pixels }
    }
}

/// How a decoded image becomes the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Preprocess {
    /// The image must already have the input size.
    Exact,
    /// Resize (bicubic) to the input size.
    Resize,
    /// Crop the centre at the input size (no resampling).
    CenterCrop,
    /// Resize the shorter side to `resize`, then crop the centre.
    ResizeCenterCrop {
        /// Shorter side after resizing.
        resize: usize,
    },
}

/// Decodes PNG or JPEG bytes and preprocesses them to `height × width`.
pub fn decode_image(bytes: &[u8], pre: Preprocess, height: usize, width: usize) -> Result<Image> {
    let img = image::load_from_memory(bytes).map_err(|e| Error::Image { reason: e.to_string() })?.to_rgb8();
    preprocess(img, pre, height, width)
}

fn preprocess(img: RgbImage, pre: Preprocess, height: usize, width: usize) -> Result<Image> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let out = match pre {
        Preprocess::Exact => {
            if (h, w) != (height, width) {
                return Err(Error::BadInput(format!(
                    "image is {h}×{w}, the model expects exactly {height}×{width} (its preprocessing does not resize)"
                )));
            }
            img
        }
        Preprocess::Resize => image::imageops::resize(&img, width as u32, height as u32, FilterType::CatmullRom),
        Preprocess::CenterCrop => {
            if h < height || w < width {
                return Err(Error::BadInput(format!("image is {h}×{w}, too small to crop {height}×{width}")));
            }
            let (x0, y0) = ((w - width) / 2, (h - height) / 2);
            image::imageops::crop_imm(&img, x0 as u32, y0 as u32, width as u32, height as u32).to_image()
        }
        Preprocess::ResizeCenterCrop { resize } => {
            let scale = resize as f32 / h.min(w) as f32;
            let (nw, nh) = ((w as f32 * scale).round() as u32, (h as f32 * scale).round() as u32);
            let r = image::imageops::resize(&img, nw, nh, FilterType::CatmullRom);
            return preprocess(r, Preprocess::CenterCrop, height, width);
        }
    };
    Ok(Image::from_rgb(&out))
}

/// Images of one split with their labels, at the model's input size.
#[derive(Debug, Clone)]
pub struct Split {
    /// Split name (`test`, `train`, `dev`).
    pub name: String,
    /// Height of every image.
    pub height: usize,
    /// Width of every image.
    pub width: usize,
    /// Labels.
    pub labels: Vec<usize>,
    /// Planar 8-bit RGB, `3·h·w` bytes per image.
    pixels: Vec<u8>,
    /// Source file of each image (image folders).
    pub files: Vec<String>,
}

impl Split {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the split has no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i` in `[0, 1]`.
    pub fn image(&self, i: usize) -> Result<Image> {
        if i >= self.len() {
            return Err(Error::NotFound(format!("image {i} of split `{}` (it has {} images)", self.name, self.len())));
        }
        let n = 3 * self.height * self.width;
        let pixels = self.pixels[i * n..(i + 1) * n].iter().map(|&b| f32::from(b) / 255.0).collect();
        Ok(Image { height: self.height, width: self.width, pixels })
    }

    /// Label of image `i`.
    pub fn label(&self, i: usize) -> Result<usize> {
        self.labels
            .get(i)
            .copied()
            .ok_or_else(|| Error::NotFound(format!("image {i} of split `{}` (it has {} images)", self.name, self.len())))
    }

    /// Reads a CIFAR-10 binary file (records of a label byte and 3072 planar bytes).
    pub fn read_cifar(name: &str, path: &Path, limit: Option<usize>) -> Result<Split> {
        let bytes = std::fs::read(path).map_err(|e| Error::Data { reason: e.to_string(), path: path.into() })?;
        if bytes.is_empty() || bytes.len() % CIFAR_RECORD != 0 {
            return Err(Error::Data {
                reason: format!("{} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records", bytes.len()),
                path: path.into(),
            });
        }
        let n = (bytes.len() / CIFAR_RECORD).min(limit.unwrap_or(usize::MAX));
        let mut labels = Vec::with_capacity(n);
        let mut pixels = Vec::with_capacity(n * 3072);
        for rec in bytes.chunks_exact(CIFAR_RECORD).take(n) {
            if rec[0] > 9 {
                return Err(Error::Data { reason: format!("label {} out of 0..=9", rec[0]), path: path.into() });
            }
            labels.push(usize::from(rec[0]));
            pixels.extend_from_slice(&rec[1..]);
        }
        Ok(Split { name: name.into(), height: 32, width: 32, labels, pixels, files: vec![] })
    }

    /// Reads an image folder: `dir/labels.csv` with columns `file` and
    /// `label_column`, the files relative to `dir` (or `dir/images`).
    pub fn read_folder(name: &str, dir: &Path, label_column: &str, pre: Preprocess, height: usize, width: usize) -> Result<Split> {
        let csv_path = dir.join("labels.csv");
        let mut rdr = csv::Reader::from_path(&csv_path).map_err(|e| Error::Data { reason: e.to_string(), path: csv_path.clone() })?;
        let headers = rdr.headers().map_err(|e| Error::Data { reason: e.to_string(), path: csv_path.clone() })?.clone();
        let col = |n: &str| {
            headers.iter().position(|h| h == n).ok_or_else(|| Error::Data {
                reason: format!("no column `{n}` (columns: {})", headers.iter().collect::<Vec<_>>().join(", ")),
                path: csv_path.clone(),
            })
        };
        let (fc, lc) = (col("file")?, col(label_column)?);
        let mut split = Split { name: name.into(), height, width, labels: vec![], pixels: vec![], files: vec![] };
        for rec in rdr.records() {
            let rec = rec.map_err(|e| Error::Data { reason: e.to_string(), path: csv_path.clone() })?;
            let file = rec.get(fc).unwrap_or_default().to_string();
            let label: usize = rec.get(lc).unwrap_or_default().trim().parse().map_err(|_| Error::Data {
                reason: format!("label `{}` of `{file}` is not a class index", rec.get(lc).unwrap_or_default()),
                path: csv_path.clone(),
            })?;
            let path = [dir.join(&file), dir.join("images").join(&file)].into_iter().find(|p| p.is_file()).ok_or_else(|| {
                Error::Data { reason: format!("listed image `{file}` is missing"), path: dir.into() }
            })?;
            let bytes = std::fs::read(&path).map_err(|e| Error::Data { reason: e.to_string(), path: path.clone() })?;
            let img = decode_image(&bytes, pre, height, width).map_err(|e| Error::Data { reason: e.to_string(), path: path.clone() })?;
            split.pixels.extend(img.pixels.iter().map(|&p| (p * 255.0).round() as u8));
            split.labels.push(label);
            split.files.push(file);
        }
        if split.is_empty() {
            return Err(Error::Data { reason: "no images listed".into(), path: csv_path });
        }
        Ok(split)
    }
}

/// Reads class names, one per line.
pub fn read_classes(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Data { reason: e.to_string(), path: path.into() })?;
    Ok(text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
}

/// Where the real data lives: the `--data` flag, else `AEVIS_DATA`, else
/// `../shared/data` beside the current folder or beside the source checkout.
pub fn default_data_dir() -> PathBuf {
    if let Ok(p) = std::env::var("AEVIS_DATA") {
        return PathBuf::from(p);
    }
    let beside_cwd = PathBuf::from("../shared/data");
    if beside_cwd.is_dir() {
        return beside_cwd;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_image_is_a_clear_error() {
        let err = decode_image(b"not an image", Preprocess::Resize, 32, 32).unwrap_err();
        assert!(matches!(err, Error::Image { .. }), "{err}");
    }

    #[test]
    fn png_round_trip_is_exact_for_8_bit_values() {
        let img = Image { height: 2, width: 3, pixels: (0..18).map(|i| (i * 13) as f32 / 255.0).collect() };
        let png = img.to_png();
        let back = decode_image(&png, Preprocess::Exact, 2, 3).unwrap();
        for (a, b) in img.pixels.iter().zip(&back.pixels) {
            assert!((a - b).abs() < 1e-6);
        }
        assert!(decode_image(&png, Preprocess::Exact, 4, 4).is_err());
    }

    #[test]
    fn truncated_cifar_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        std::fs::write(&p, vec![0u8; CIFAR_RECORD + 5]).unwrap();
        let err = Split::read_cifar("test", &p, None).unwrap_err();
        assert!(err.to_string().contains("3073"), "{err}");
    }
}
