//! Static files embedded in the binary: the stylesheet, the console script, and htmx 2.0.11
//! (vendored from npm `htmx.org`, BSD Zero-Clause licence in `static/htmx-LICENSE.txt`).
//! In debug builds rust-embed reads them from disk, so CSS edits show without a rebuild.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

/// The embedded `static/` directory.
#[derive(Embed)]
#[folder = "static/"]
pub struct Static;

/// `GET /static/{path}`.
pub async fn serve(Path(path): Path<String>) -> Response {
    match Static::get(&path) {
        Some(file) => {
            let mime = file.metadata.mimetype();
            let mut response = file.data.into_owned().into_response();
            let headers = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(mime) {
                headers.insert(header::CONTENT_TYPE, v);
            }
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            response
        }
        None => (StatusCode::NOT_FOUND, format!("no static file {path}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htmx_ships_with_its_licence_and_the_console_files_exist() {
        for f in [
            "htmx-2.0.11.min.js",
            "htmx-LICENSE.txt",
            "console.css",
            "console.js",
        ] {
            assert!(Static::get(f).is_some(), "missing static/{f}");
        }
        let licence = Static::get("htmx-LICENSE.txt").expect("licence");
        assert!(String::from_utf8_lossy(&licence.data).contains("Zero-Clause BSD"));
    }
}
