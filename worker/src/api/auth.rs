//! The bearer token of the API on TCP: every request there carries `Authorization: Bearer
//! TOKEN`, or is answered 401. The unix socket asks for none: its mode (0600, root) is the check.
//! The hub's API checks its token the same way.
//!
//! The token is the content of `api_token_file`, trimmed. It is compared in constant time (its
//! length is not secret), and never logged.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tracing::warn;

use crate::api::failure::Failure;
use crate::error::{Error, Result};

/// The environment variable that holds the cluster's token, before any token file.
pub const TOKEN_VAR: &str = "PICO_TOKEN";

/// The token TCP requests must carry.
#[derive(Clone)]
pub struct ApiToken(Arc<str>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

impl ApiToken {
    /// The token in the file at `path`: its content, trimmed, which must not be empty.
    pub fn load(path: &Path) -> Result<ApiToken> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(Error::ApiTokenEmpty {
                path: path.to_path_buf(),
            });
        }
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                warn!(path = %path.display(), "the API token file is readable by others: chmod 600 it");
            }
        }
        Ok(ApiToken(token.into()))
    }

    /// The cluster's token: `$PICO_TOKEN` when set (and not empty), else the content of
    /// `file`; [`Error::TokenMissing`] with neither. Tokens are never given on a command line,
    /// where every user of the machine could read them.
    pub fn cluster(file: Option<&Path>) -> Result<ApiToken> {
        match std::env::var(TOKEN_VAR) {
            Ok(token) if !token.trim().is_empty() => Ok(ApiToken(token.trim().into())),
            _ => match file {
                Some(path) => ApiToken::load(path),
                None => Err(Error::TokenMissing),
            },
        }
    }

    /// The token itself, to present to another API (never log it).
    pub fn text(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn from_text(token: &str) -> ApiToken {
        ApiToken(token.into())
    }

    /// Whether an `Authorization` header carries this token (scheme `Bearer`, any case).
    fn admits(&self, header: Option<&HeaderValue>) -> bool {
        let Some(offered) = header
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
        else {
            return false;
        };
        offered.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

/// Middleware: passes a request carrying the token on, answers any other 401.
pub async fn require_token(
    State(token): State<ApiToken>,
    request: Request,
    next: Next,
) -> Response {
    if token.admits(request.headers().get(AUTHORIZATION)) {
        return next.run(request).await;
    }
    let mut response = Failure::new(
        StatusCode::UNAUTHORIZED,
        "this API needs the header `Authorization: Bearer TOKEN` (the content of its token file)",
    )
    .into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_bearer_token_is_admitted() {
        let token = ApiToken::from_text("s3cret");
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(token.admits(Some(&header("Bearer s3cret"))));
        assert!(token.admits(Some(&header("bearer s3cret"))));
        assert!(!token.admits(None));
        assert!(!token.admits(Some(&header("Bearer s3cre"))));
        assert!(!token.admits(Some(&header("Bearer s3cret2"))));
        assert!(!token.admits(Some(&header("Basic s3cret"))));
        assert!(!token.admits(Some(&header("s3cret"))));
        assert!(!token.admits(Some(&header("Bearer "))));
    }

    #[test]
    fn the_token_file_is_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  abc\n").unwrap();
        assert_eq!(&*ApiToken::load(&path).unwrap().0, "abc");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            ApiToken::load(&path),
            Err(Error::ApiTokenEmpty { .. })
        ));
        assert!(matches!(
            ApiToken::load(&dir.path().join("missing")),
            Err(Error::Io { .. })
        ));
    }
}
