//! Whole responses written by the admin listener (routes API, metrics, admin page): never
//! cached, sized up front.

use http::{Response, StatusCode};
use serde_json::Value;

pub fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .expect("static response parts are valid")
}

pub fn json(status: StatusCode, value: &Value) -> Response<Vec<u8>> {
    reply(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}
