//! Image batches as ComfyUI holds them (float RGB in `0..=1`, `[batch, height, width, 3]`) and
//! their PNG form. Pixel arithmetic is `f32`, like torch, so saved bytes match ComfyUI's
//! truncating `np.clip(255. * x, 0, 255).astype(np.uint8)`.

use std::io::Cursor;

/// A batch of same-sized RGB images.
#[derive(Debug, Clone)]
pub(crate) struct Images {
    pub(crate) width: usize,
    pub(crate) height: usize,
    /// One `width * height * 3` vector per image.
    pub(crate) frames: Vec<Vec<f32>>,
}

/// A batch of masks, `width * height` values each.
#[derive(Debug, Clone)]
pub(crate) struct Masks {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) frames: Vec<Vec<f32>>,
}

impl Images {
    /// `EmptyImage`: every pixel `0xRRGGBB`.
    pub(crate) fn solid(width: usize, height: usize, batch: usize, color: i64) -> Images {
        let channel = |shift: i64| (((color >> shift) & 0xFF) as f64 / 255.0) as f32;
        let rgb = [channel(16), channel(8), channel(0)];
        let frame: Vec<f32> = (0..width * height).flat_map(|_| rgb).collect();
        Images {
            width,
            height,
            frames: vec![frame; batch.max(1)],
        }
    }

    /// Deterministic noise, standing in for what a sampler and VAE would produce.
    pub(crate) fn noise(width: usize, height: usize, batch: usize, seed: u64) -> Images {
        let mut rng = fastrand::Rng::with_seed(seed);
        let frames = (0..batch.max(1))
            .map(|_| (0..width * height * 3).map(|_| rng.f32()).collect())
            .collect();
        Images {
            width,
            height,
            frames,
        }
    }

    pub(crate) fn invert(&self) -> Images {
        Images {
            width: self.width,
            height: self.height,
            frames: self
                .frames
                .iter()
                .map(|f| f.iter().map(|v| 1.0 - v).collect())
                .collect(),
        }
    }

    /// Nearest-neighbour resize, after an optional centre crop to the target aspect ratio.
    pub(crate) fn scale(&self, width: usize, height: usize, center_crop: bool) -> Images {
        let (mut x0, mut y0, mut w, mut h) = (0, 0, self.width, self.height);
        if center_crop && width > 0 && height > 0 {
            let old_aspect = self.width as f64 / self.height.max(1) as f64;
            let new_aspect = width as f64 / height as f64;
            if old_aspect > new_aspect {
                w = ((self.width as f64 * new_aspect / old_aspect).round() as usize).max(1);
                x0 = (self.width - w) / 2;
            } else if old_aspect < new_aspect {
                h = ((self.height as f64 * old_aspect / new_aspect).round() as usize).max(1);
                y0 = (self.height - h) / 2;
            }
        }
        let frames = self
            .frames
            .iter()
            .map(|f| {
                let mut out = Vec::with_capacity(width * height * 3);
                for y in 0..height {
                    let sy = y0 + (y * h / height.max(1)).min(h.saturating_sub(1));
                    for x in 0..width {
                        let sx = x0 + (x * w / width.max(1)).min(w.saturating_sub(1));
                        let at = (sy * self.width + sx) * 3;
                        out.extend_from_slice(&f[at..at + 3]);
                    }
                }
                out
            })
            .collect();
        Images {
            width,
            height,
            frames,
        }
    }

    /// One image as 8-bit RGB bytes.
    pub(crate) fn bytes(&self, index: usize) -> Vec<u8> {
        self.frames
            .get(index)
            .map(|f| {
                f.iter()
                    .map(|v| (255.0f32 * v).clamp(0.0, 255.0) as u8)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One image as a PNG with `tEXt` chunks (ComfyUI stores `prompt` and `extra_pnginfo`).
    pub(crate) fn png(
        &self,
        index: usize,
        text: &[(String, String)],
    ) -> Result<Vec<u8>, png::EncodingError> {
        encode_png(self.width, self.height, 3, &self.bytes(index), text)
    }

    /// ComfyUI's short description of a tensor, for `current_inputs` and `PreviewAny`.
    pub(crate) fn describe(&self) -> String {
        format!(
            "tensor(shape=[{}, {}, {}, 3], dtype=torch.float32)",
            self.frames.len(),
            self.height,
            self.width
        )
    }
}

impl Masks {
    pub(crate) fn zeros(width: usize, height: usize, batch: usize) -> Masks {
        Masks {
            width,
            height,
            frames: vec![vec![0.0; width * height]; batch.max(1)],
        }
    }
}

/// Encodes 8-bit pixels with `channels` of 1 (grey), 3 (RGB) or 4 (RGBA).
pub(crate) fn encode_png(
    width: usize,
    height: usize,
    channels: usize,
    data: &[u8],
    text: &[(String, String)],
) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let w = u32::try_from(width).unwrap_or(u32::MAX);
    let h = u32::try_from(height).unwrap_or(u32::MAX);
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(match channels {
        1 => png::ColorType::Grayscale,
        4 => png::ColorType::Rgba,
        _ => png::ColorType::Rgb,
    });
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    for (key, value) in text {
        encoder.add_text_chunk(key.clone(), value.clone())?;
    }
    let mut writer = encoder.write_header()?;
    writer.write_image_data(data)?;
    writer.finish()?;
    Ok(out)
}

/// A decoded PNG as 8-bit RGBA, whatever its colour type.
pub(crate) struct Decoded {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) rgba: Vec<u8>,
    pub(crate) has_alpha: bool,
}

pub(crate) fn decode_png(bytes: &[u8]) -> Option<Decoded> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().ok()?;
    let mut buf = vec![0; reader.output_buffer_size()?];
    let info = reader.next_frame(&mut buf).ok()?;
    buf.truncate(info.buffer_size());
    let (width, height) = (info.width as usize, info.height as usize);
    let (rgba, has_alpha) = match info.color_type {
        png::ColorType::Rgba => (buf, true),
        png::ColorType::Rgb => (
            buf.chunks_exact(3)
                .flat_map(|p| [p[0], p[1], p[2], 255])
                .collect(),
            false,
        ),
        png::ColorType::GrayscaleAlpha => (
            buf.chunks_exact(2)
                .flat_map(|p| [p[0], p[0], p[0], p[1]])
                .collect(),
            true,
        ),
        png::ColorType::Grayscale => (buf.iter().flat_map(|&g| [g, g, g, 255]).collect(), false),
        png::ColorType::Indexed => return None,
    };
    Some(Decoded {
        width,
        height,
        rgba,
        has_alpha,
    })
}

impl Decoded {
    /// `LoadImage`: the image, and the mask ComfyUI derives (`1 - alpha`, or 64×64 zeros).
    pub(crate) fn to_image_and_mask(&self) -> (Images, Masks) {
        let rgb = self
            .rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]].map(|c| c as f32 / 255.0))
            .collect();
        let images = Images {
            width: self.width,
            height: self.height,
            frames: vec![rgb],
        };
        let masks = if self.has_alpha {
            Masks {
                width: self.width,
                height: self.height,
                frames: vec![
                    self.rgba
                        .chunks_exact(4)
                        .map(|p| 1.0 - p[3] as f32 / 255.0)
                        .collect(),
                ],
            }
        } else {
            Masks::zeros(64, 64, 1)
        };
        (images, masks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverted_orange_saves_as_recorded() {
        // The recorded view of `EmptyImage(color=0xFF8000)` → `ImageInvert` has pixel (0, 126, 255).
        let img = Images::solid(2, 2, 1, 0xFF8000).invert();
        assert_eq!(&img.bytes(0)[..3], &[0, 126, 255]);
    }

    #[test]
    fn png_round_trip() {
        let img = Images::solid(5, 3, 1, 0x102030);
        let png = img
            .png(0, &[("prompt".into(), "{}".into())])
            .unwrap_or_else(|e| panic!("{e}"));
        let d = decode_png(&png).unwrap_or_else(|| panic!("decodes"));
        assert_eq!((d.width, d.height), (5, 3));
        assert_eq!(&d.rgba[..4], &[0x10, 0x20, 0x30, 255]);
        let scaled = img.scale(10, 6, false);
        assert_eq!(scaled.frames[0].len(), 10 * 6 * 3);
    }
}
