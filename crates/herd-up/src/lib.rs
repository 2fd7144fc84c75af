//! herd-up
