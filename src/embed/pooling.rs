//! Token vectors -> one vector per text, as sentence-transformers' `Pooling` and `Normalize`
//! modules do it: the mode comes from a folder's `1_Pooling/config.json` (see
//! [`super::folder`]).

use candle_core::{D, DType, Result, Tensor};

/// How a text's token vectors become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The average over the real (unmasked) tokens.
    Mean,
    /// The first token's vector (`[CLS]` / `<s>`; texts are padded on the right).
    Cls,
    /// The largest value of each dimension over the real tokens.
    Max,
}

impl Pooling {
    /// The mode a sentence-transformers `pooling_mode` name stands for.
    pub fn from_name(name: &str) -> Option<Pooling> {
        match name {
            "mean" => Some(Pooling::Mean),
            "cls" => Some(Pooling::Cls),
            "max" => Some(Pooling::Max),
            _ => None,
        }
    }

    /// `hidden`: (batch, seq, dim) f32; `mask`: (batch, seq) u32, 1 for real tokens.
    /// Returns (batch, dim).
    pub fn pool(self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        match self {
            Pooling::Mean => {
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
                summed.broadcast_div(&counts)
            }
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1),
            Pooling::Max => {
                // Padding gets -inf (as sentence-transformers' masked_fill) so it never wins.
                let real = mask.broadcast_as(hidden.shape())?.ne(0.0)?;
                let floor = Tensor::full(f32::NEG_INFINITY, hidden.shape(), hidden.device())?;
                real.where_cond(hidden, &floor)?.max(1)
            }
        }
    }
}

/// Scales each row of `rows` (batch, dim) to unit length, as sentence-transformers'
/// `Normalize` (a zero row stays zero).
pub fn normalize(rows: &Tensor) -> Result<Tensor> {
    let norms = rows
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    rows.broadcast_div(&norms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::mpnet::tests::{max_diff, rows, tiny_reference};
    use candle_core::Device;

    /// The tiny model's reference hidden states, padded with a large value that must not
    /// reach any pooled vector, and the mask.
    fn hidden_and_mask() -> (Tensor, Tensor) {
        let reference = tiny_reference();
        let mask: Vec<Vec<u32>> = rows(&reference["mask"]);
        let width = mask[0].len();
        let mut data = Vec::new();
        for row in reference["hidden"].as_array().unwrap() {
            let tokens: Vec<Vec<f32>> = rows(row);
            let dim = tokens[0].len();
            let padding = width - tokens.len();
            data.extend(tokens.into_iter().flatten());
            data.extend(std::iter::repeat_n(1e3f32, padding * dim));
        }
        let dev = &Device::Cpu;
        let dim = data.len() / (mask.len() * width);
        (
            Tensor::from_vec(data, (mask.len(), width, dim), dev).unwrap(),
            Tensor::new(mask, dev).unwrap(),
        )
    }

    #[test]
    fn each_mode_matches_sentence_transformers_pooling() {
        let (hidden, mask) = hidden_and_mask();
        let reference = tiny_reference();
        for (name, mode) in [
            ("mean", Pooling::Mean),
            ("cls", Pooling::Cls),
            ("max", Pooling::Max),
        ] {
            assert_eq!(Pooling::from_name(name), Some(mode));
            let got = mode.pool(&hidden, &mask).unwrap().to_vec2::<f32>().unwrap();
            let want: Vec<Vec<f32>> = rows(&reference["pooled"][name]);
            assert_eq!(got.len(), want.len());
            for (row, (g, w)) in got.iter().zip(&want).enumerate() {
                let d = max_diff(g, w);
                assert!(d < 1e-5, "{name} row {row}: off by {d}");
            }
        }
    }

    #[test]
    fn normalize_gives_unit_rows_and_keeps_zero_rows_zero() {
        let rows = Tensor::new(&[[3f32, 4.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let got = normalize(&rows).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got, vec![vec![0.6, 0.8], vec![0.0, 0.0]]);
    }
}
