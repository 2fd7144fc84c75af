//! herd-cli
