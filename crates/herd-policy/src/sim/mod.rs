//! The simulator: replays a workload trace through the same engine and policies.
