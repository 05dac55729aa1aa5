//! The one place that knows the binary wire format (bincode 2 over serde), so
//! it can be swapped without touching the rest.

use serde::{Serialize, de::DeserializeOwned};

/// Largest body the decoder will allocate for (guards against garbage lengths).
pub const MAX_DECODE_BYTES: usize = 512 << 20;

/// MIME type of a binary body.
pub const BINARY_MIME: &str = "application/octet-stream";

/// Why a body could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("could not encode the body: {0}")]
    Encode(String),
    /// The body is not a valid encoding of the expected type.
    #[error("the body is not a valid {expected} (bincode): {reason}")]
    Decode {
        /// The type that was expected.
        expected: &'static str,
        /// What the decoder reported.
        reason: String,
    },
    /// Bytes were left over after the value.
    #[error("the body holds {extra} bytes after a complete {expected}")]
    Trailing {
        /// The type that was decoded.
        expected: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes a value to bytes.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a whole body; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let expected = std::any::type_name::<T>().rsplit("::").next().unwrap_or("value");
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode { expected, reason: e.to_string() })?;
    if read != bytes.len() {
        return Err(CodecError::Trailing { expected, extra: bytes.len() - read });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let v: (u32, String, Vec<f32>) = (7, "layer1.0.out".into(), vec![0.5, 1.0]);
        let bytes = encode(&v).unwrap();
        let back: (u32, String, Vec<f32>) = decode(&bytes).unwrap();
        assert_eq!(back, v);
        let truncated = &bytes[..bytes.len() - 3];
        assert!(matches!(decode::<(u32, String, Vec<f32>)>(truncated), Err(CodecError::Decode { .. })));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode::<(u32, String, Vec<f32>)>(&longer), Err(CodecError::Trailing { extra: 1, .. })));
    }
}
