//! herd-broker
