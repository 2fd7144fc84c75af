//! Errors the Control node answers with: a kind that maps to an HTTP status, and a message
//! written for the person at the CLI.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herd_proto::api::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed or names something invalid.
    BadRequest,
    NotFound,
    /// The request is understood and refused: what it carries is not trusted.
    Forbidden,
    /// The request clashes with the current state (name in use, container running, ...).
    Conflict,
    /// A node or the broker cannot be reached.
    Unavailable,
    /// A node tried and failed.
    NodeFailed,
    /// The request, or what it would make, is larger than a bound (the broker's message size,
    /// what an image may unpack to, ...).
    TooLarge,
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: Kind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Kind::Forbidden, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(Kind::TooLarge, message)
    }

    /// A broker error: [`Kind::TooLarge`] when the message was too large to send (the request's
    /// fault), else `kind`.
    pub fn from_broker(kind: Kind, e: &anyhow::Error) -> Self {
        match herd_broker::payload_too_large(e) {
            Some(too_large) => Self::too_large(too_large.to_string()),
            None => Self::new(kind, format!("{e:#}")),
        }
    }

    fn status(&self) -> StatusCode {
        match self.kind {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::NodeFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::from_broker(Kind::Internal, &e)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (self.status(), Json(ApiError { error: self.message })).into_response()
    }
}
