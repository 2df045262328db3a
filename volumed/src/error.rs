//! volumed's errors and their one mapping to gRPC status codes. Messages copy Docker's
//! wording (moby `volume/service` OpErr: "<op> <name>: <error>") because the CLI shows
//! them verbatim.

/// Everything that can go wrong in volumed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Docker: `get <name>: no such volume`.
    #[error("get {0}: no such volume")]
    NotFound(String),
    /// Docker's local driver rejects one-character names.
    #[error(
        "create {0}: volume name is too short, names should be at least two alphanumeric characters"
    )]
    NameTooShort(String),
    /// Docker's local driver name check.
    #[error(
        "create {0}: \"{0}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
    )]
    InvalidName(String),
    /// Docker's local driver accepts only type, device, o and size.
    #[error("create {name}: invalid option: \"{option}\"")]
    InvalidOption {
        /// The volume.
        name: String,
        /// The rejected option key.
        option: String,
    },
    /// Docker's local driver: `type`, `device` and `o` need each other.
    #[error("create {name}: missing required option: \"{option}\"")]
    MissingOption {
        /// The volume.
        name: String,
        /// The option that must be given too.
        option: String,
    },
    /// The `size` option needs project quotas, which volumed does not set up (Docker
    /// refuses it the same way without quota support).
    #[error("create {0}: quota size requested but no quota support")]
    QuotaUnsupported(String),
    /// Docker: an anonymous volume cannot go where the image has a file.
    #[error("cannot mount volume over existing file, file exists {0}")]
    FileExists(String),
    /// Mounting a volume with `type`/`device` options failed (Docker's wording).
    #[error("error while mounting volume '{path}': {message}")]
    Mount {
        /// The volume's `_data` directory.
        path: String,
        /// What mount(2) said.
        message: String,
    },
    /// Only the local driver exists (Docker's wording for a missing plugin).
    #[error("error looking up volume plugin {0}: plugin \"{0}\" not found")]
    UnknownDriver(String),
    /// Docker: `remove <name>: volume is in use - [<ids>]`.
    #[error("remove {name}: volume is in use - [{}]", containers.join(", "))]
    InUse {
        /// The volume.
        name: String,
        /// Containers using it.
        containers: Vec<String>,
    },
    /// A request field is missing or malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state database failed.
    #[error("state database: {0}")]
    Db(#[from] sqlx::Error),
}

impl VolumeError {
    /// An I/O error with its context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<VolumeError> for tonic::Status {
    fn from(e: VolumeError) -> Self {
        let msg = e.to_string();
        match e {
            VolumeError::NotFound(_) | VolumeError::UnknownDriver(_) => {
                tonic::Status::not_found(msg)
            }
            VolumeError::NameTooShort(_)
            | VolumeError::InvalidName(_)
            | VolumeError::InvalidOption { .. }
            | VolumeError::MissingOption { .. }
            | VolumeError::QuotaUnsupported(_)
            | VolumeError::FileExists(_)
            | VolumeError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            VolumeError::InUse { .. } => tonic::Status::failed_precondition(msg),
            VolumeError::Io { .. } | VolumeError::Mount { .. } | VolumeError::Db(_) => {
                tonic::Status::internal(msg)
            }
        }
    }
}
