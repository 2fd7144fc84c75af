//! herd-node
