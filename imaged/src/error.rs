//! imaged's errors and their one mapping to gRPC status codes.

/// Everything that can go wrong in imaged.
#[derive(Debug, thiserror::Error)]
pub enum ImagedError {
    /// A reference, ID or argument the caller sent is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The image, tag, manifest or snapshot does not exist (message in Docker's wording).
    #[error("{0}")]
    NotFound(String),
    /// The thing to create exists already in a conflicting form.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request cannot be done in the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A registry could not be reached (message in Docker's wording).
    #[error("{0}")]
    Unavailable(String),
    /// Something Berth does not do yet (HTTP 501 at the API).
    #[error("{0} is not supported yet")]
    Unimplemented(String),
    /// The registry refused the credentials (message in Docker's wording).
    #[error("{0}")]
    Unauthenticated(String),
    /// The registry answered something we cannot use.
    #[error("{0}")]
    Registry(String),
    /// A layer's content failed verification or is hostile (escapes its root).
    #[error("{0}")]
    BadLayer(String),
    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing, with the path.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A mount or unmount failed.
    #[error("{context}: {source}")]
    Mount {
        /// What we were mounting, with the path.
        context: String,
        /// The errno.
        source: nix::Error,
    },
}

impl ImagedError {
    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<ImagedError> for tonic::Status {
    fn from(err: ImagedError) -> Self {
        let msg = err.to_string();
        match err {
            ImagedError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            ImagedError::NotFound(_) => tonic::Status::not_found(msg),
            ImagedError::AlreadyExists(_) => tonic::Status::already_exists(msg),
            ImagedError::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            ImagedError::Unavailable(_) => tonic::Status::unavailable(msg),
            ImagedError::Unauthenticated(_) => tonic::Status::unauthenticated(msg),
            ImagedError::Unimplemented(_) => tonic::Status::unimplemented(msg),
            ImagedError::Registry(_)
            | ImagedError::BadLayer(_)
            | ImagedError::Io { .. }
            | ImagedError::Db(_)
            | ImagedError::Mount { .. } => tonic::Status::internal(msg),
        }
    }
}

/// Shorthand for imaged results.
pub type Result<T, E = ImagedError> = std::result::Result<T, E>;
