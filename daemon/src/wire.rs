//! Content negotiation: bincode by default, JSON when asked for.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use aevis_shared::codec;
use serde::{Serialize, de::DeserializeOwned};

use crate::error::{ApiError, kind_of_status};

/// MIME type of a JSON body.
pub const JSON_MIME: &str = "application/json";

/// A body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// bincode via [`aevis_shared::codec`].
    Bincode,
    /// JSON.
    Json,
}

impl Format {
    /// The answer format a request asks for (`Accept: application/json` → JSON).
    pub fn of_accept(headers: &HeaderMap) -> Format {
        let json = headers
            .get_all(header::ACCEPT)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|m| mime_is(m, JSON_MIME));
        if json { Format::Json } else { Format::Bincode }
    }

    /// The format of a request body, from its `Content-Type` (absent → bincode).
    pub fn of_content_type(headers: &HeaderMap) -> Result<Format, ApiError> {
        let Some(value) = headers.get(header::CONTENT_TYPE) else {
            return Ok(Format::Bincode);
        };
        let value = value.to_str().unwrap_or("");
        if mime_is(value, JSON_MIME) {
            Ok(Format::Json)
        } else if mime_is(value, codec::BINARY_MIME) {
            Ok(Format::Bincode)
        } else {
            Err(ApiError::new(
                aevis_shared::protocol::ErrorKind::UnsupportedMedia,
                format!("request body of type `{value}`; expected {} (bincode) or {JSON_MIME}", codec::BINARY_MIME),
            ))
        }
    }
}

/// `m` names `mime`, ignoring parameters (`; charset=utf-8`), case and spaces.
fn mime_is(m: &str, mime: &str) -> bool {
    m.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(mime))
}

/// Encodes a value; returns the bytes and their MIME type.
pub fn encode<T: Serialize>(format: Format, value: &T) -> Result<(Vec<u8>, &'static str), ApiError> {
    match format {
        Format::Bincode => codec::encode(value)
            .map(|b| (b, codec::BINARY_MIME))
            .map_err(|e| ApiError::internal(e.to_string())),
        Format::Json => serde_json::to_vec(value)
            .map(|b| (b, JSON_MIME))
            .map_err(|e| ApiError::internal(format!("could not encode the answer as JSON: {e}"))),
    }
}

/// Decodes a body in `format` as `T`.
pub fn decode<T: DeserializeOwned>(format: Format, bytes: &[u8]) -> Result<T, ApiError> {
    match format {
        Format::Bincode => codec::decode(bytes).map_err(|e| ApiError::bad_request(e.to_string())),
        Format::Json => serde_json::from_slice(bytes).map_err(|e| {
            let expected = std::any::type_name::<T>().rsplit("::").next().unwrap_or("value");
            ApiError::bad_request(format!("the body is not a valid {expected} (JSON): {e}"))
        }),
    }
}

/// A `200` answer in the format the request asked for.
pub fn reply<T: Serialize>(req: &HttpRequest, value: &T) -> Result<HttpResponse, ApiError> {
    let (bytes, mime) = encode(Format::of_accept(req.headers()), value)?;
    Ok(HttpResponse::Ok().content_type(mime).body(bytes))
}

/// A request body decoded by its `Content-Type`, within the payload limit
/// (`web::PayloadConfig`); every failure is an [`ApiError`] (400, 413, 415).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let format = Format::of_content_type(req.headers());
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let format = format?;
            let bytes = bytes.await.map_err(|e| {
                let status = e.as_response_error().status_code();
                ApiError::new(kind_of_status(status), format!("could not read the request body: {e}"))
            })?;
            decode(format, &bytes).map(Body)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn negotiation() {
        assert_eq!(Format::of_accept(&HeaderMap::new()), Format::Bincode);
        assert_eq!(Format::of_accept(&headers(header::ACCEPT, "text/html, Application/JSON; q=0.9")), Format::Json);
        assert_eq!(Format::of_accept(&headers(header::ACCEPT, "*/*")), Format::Bincode);
        assert_eq!(Format::of_content_type(&HeaderMap::new()).unwrap(), Format::Bincode);
        assert_eq!(
            Format::of_content_type(&headers(header::CONTENT_TYPE, "application/json; charset=utf-8")).unwrap(),
            Format::Json
        );
        assert_eq!(
            Format::of_content_type(&headers(header::CONTENT_TYPE, "application/octet-stream")).unwrap(),
            Format::Bincode
        );
        let e = Format::of_content_type(&headers(header::CONTENT_TYPE, "text/plain")).unwrap_err();
        assert_eq!(e.kind().status(), 415);
    }

    #[test]
    fn decode_errors_are_bad_requests() {
        let bytes = codec::encode(&(3u32, "x".to_string())).unwrap();
        let ok: (u32, String) = decode(Format::Bincode, &bytes).unwrap();
        assert_eq!(ok, (3, "x".to_string()));
        let e = decode::<(u32, String)>(Format::Bincode, &bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!(e.kind().status(), 400);
        let e = decode::<(u32, String)>(Format::Json, b"{not json").unwrap_err();
        assert_eq!(e.kind().status(), 400);
        assert!(e.0.message.contains("JSON"), "{}", e.0.message);
    }
}
